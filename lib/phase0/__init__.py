"""Phase 0 latent structure: the latent store, frames, conditioning schemes, metrics and the gate report.

Used by the ``phase0_latent_structure`` notebook.
"""

# Modules of this family that other families may import (everything else is internal).
PUBLIC_MODULES = ()
