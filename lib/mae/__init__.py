"""AudioMAE++: the model, its registries, transforms, data sources, training loop and checkpoints.

Used by the ``audiomae_training`` notebook; the explorer loads AudioMAE++ checkpoints through ``mae_checkpoints``.
"""

# Modules of this family that other families may import (everything else is internal).
PUBLIC_MODULES = ("mae_checkpoints", "audiomae", "mae_registry", "mae_transforms")
