"""The FiftyOne explorer: audio embedders, FiftyOne data sets, spectrogram media and embedding quality.

Used by the ``fiftyone_explorer`` notebook.
"""

# Modules of this family that other families may import (everything else is internal).
PUBLIC_MODULES = ()
