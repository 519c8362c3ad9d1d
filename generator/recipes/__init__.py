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
    "fiftyone_explorer_mae": "fiftyone",
    "phase0_tier1": "phase0",
}

# Old parameter names that still work for one release (with a deprecation message).
RENAMED_PARAMETERS = {
    "digit_classification": {"threads": "cpu_threads", "max_train": "max_train_clips", "max_test": "max_test_clips"},
    "audiomae_training": {"torch_threads": "cpu_threads"},
    "fiftyone_explorer": {
        "k": "n_neighbours",
        "umap_n_neighbors": "umap_n_neighbours",
        "quality_group_column": "group_column",
    },
    "neuron_analysis": {"torch_threads": "cpu_threads", "alpha": "fdr_alpha"},
    "layer_embeddings": {"knn_k": "n_neighbours"},
}
RENAMED_PARAMETERS["fiftyone_explorer_mae"] = RENAMED_PARAMETERS["fiftyone_explorer"]

# Variants: a recipe built again with extra lib modules (code its base notebook does not carry, so
# the base stays short) and other defaults. `audiolens run BASE -p KEY VALUE` runs the variant
# whose `selects` name that value, with the base's defaults for what the user did not set.
RECIPE_VARIANTS = {
    "fiftyone_explorer_mae": {
        "recipe": "fiftyone_explorer",
        "title": "FiftyOne explorer with AudioMAE++, external encoders and radio IQ",
        "intro": 'This variant of `fiftyone_explorer` also carries the AudioMAE++ encoder (`encoder="audiomae"`: '
        'a checkpoint from `audiomae_training`), encoders saved by other programs (`encoder="external"`: a '
        'state dict, its configuration inferred from the tensor shapes) and radio IQ recordings (`dataset="rf"`, '
        "transforms `iq_spectrogram` / `iq_constellation`, encoder `transform_stats`). Its defaults explore "
        "synthetic IQ recordings of four modulations; set the parameters for your own data.",
        "modules": ["explorer.mae_embedders", "explorer.explorer_rf"],
        "defaults": {
            "dataset": "rf",
            "encoder": "transform_stats",
            "transform": "iq_spectrogram",
            "max_clips": 400,
            "map_color_column": "snr_db",
        },
        # parameter -> the values that select this variant, and whose defaults then apply to the rest:
        # "base" (an audio run with AudioMAE code) or "variant" (an RF run)
        "selects": {
            "encoder": {"values": ["audiomae", "external"], "defaults": "base"},
            "transform": {"values": ["iq_spectrogram", "iq_constellation"], "defaults": "variant"},
            "dataset": {"values": ["rf", "iq"], "defaults": "variant"},
            "encoder ": {"values": ["transform_stats"], "defaults": "variant"},
        },
    },
}
