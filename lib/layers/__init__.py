"""Layer embeddings: per-layer extraction, separability scores, 2-D/3-D views and word samples.

Used by the ``layer_embeddings`` notebook.
"""

# Modules of this family that other families may import (everything else is internal).
PUBLIC_MODULES = ()
