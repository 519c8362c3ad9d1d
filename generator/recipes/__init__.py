"""Recipes: one Jupytext percent-script per notebook.

``NOTEBOOKS`` maps each notebook to the pyproject extra whose requirements its setup cell
installs. A recipe's first code cell is tagged ``parameters`` (papermill).
"""

NOTEBOOKS = {
    "digit_classification": "digits",
    "audiomae_training": "audiomae",
    "fiftyone_explorer": "fiftyone",
    "neuron_analysis": "neurons",
    "layer_embeddings": "layers",
    "phase0_latent_structure": "phase0",
}
