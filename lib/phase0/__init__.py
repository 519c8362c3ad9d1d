"""Phase 0 latent structure and its Tier 1 follow-ups: the latent store, frames, conditioning schemes,
metrics, the gate report and its artefacts; the vMF x LogNormal next-step model, the memory-injection
diagnostic and the representation comparison.

Used by the ``phase0_latent_structure`` and ``phase0_tier1`` notebooks.
"""

# Modules of this family that other families may import (everything else is internal).
PUBLIC_MODULES = ()
