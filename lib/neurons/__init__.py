"""Neuron analysis: streamed layer activations, the frame grid, tuning statistics, the semantic projector,
Whisper keywords and the live view.

Used by the ``neuron_analysis`` notebook.
"""

# Modules of this family that other families may import (everything else is internal).
PUBLIC_MODULES = ()
