"""Spoken-digit recognition: MFCC features, the SVM/CNN/Wav2Vec2 models, evaluation, model files and live use.

Used by the ``digit_classification`` notebook.
"""

# Modules of this family that other families may import (everything else is internal).
PUBLIC_MODULES = ()
