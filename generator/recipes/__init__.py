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
    "phase0_tier1": "phase0",
}

# Old parameter names that still work for one release (with a deprecation message).
RENAMED_PARAMETERS = {
    "digit_classification": {"threads": "cpu_threads", "max_train": "max_train_clips", "max_test": "max_test_clips"},
    "audiomae_training": {"torch_threads": "cpu_threads"},
    "fiftyone_explorer": {"k": "n_neighbours", "umap_n_neighbors": "umap_n_neighbours"},
    "neuron_analysis": {"torch_threads": "cpu_threads", "alpha": "fdr_alpha"},
    "layer_embeddings": {"knn_k": "n_neighbours"},
}
