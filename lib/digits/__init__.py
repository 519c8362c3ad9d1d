"""Spoken-digit recognition: MFCC features, the SVM/CNN/Wav2Vec2 models, the frozen-Whisper-encoder model with its
decoder digit prior, the zero-shot Whisper bar, evaluation (speaker-held-out, other folders), model files and live use.

Used by the ``digit_classification`` notebook.
"""

# Modules of this family that other families may import (everything else is internal).
PUBLIC_MODULES = ()
