# %% [markdown]
# # Layer separability: which layer separates the words best
#
# Three complementary views of how well one layer's pooled embeddings separate the words,
# all computed on z-scored features:
#
# - **kNN accuracy**: cross-validated k-nearest-neighbour classification (cosine distance).
#   High when words form tight neighbourhoods, whatever their shape.
# - **Linear-probe accuracy**: cross-validated logistic regression. High when words are
#   linearly separable, the usual probing measure of what a layer "encodes".
# - **Silhouette**: cohesion vs separation of the word clusters (cosine), from -1 to 1,
#   with no training at all (NaN for a layer whose features are constant).
#
# Cross-validation folds are stratified by word; with `group_by_speaker` they also hold
# speakers out (no speaker in both training and test), so a layer cannot score by
# recognising voices. `layer_separability_table` scores every model and layer into one
# table; `plot_layer_separability` draws it across layers, with the chance level and any
# baseline row as reference lines.

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lib.core.accuracy import accuracy_interval, paired_comparison

SEPARABILITY_METRICS = ("knn_acc", "linear_acc", "silhouette")


def separability_folds(labels, groups=None, n_splits: int = 5, seed: int = 0):
    """Cross-validation splits stratified by label; speakers held out when ``groups`` is given.

    The number of folds shrinks to what the data allows (the smallest class, or the number
    of groups); at least 2 folds are needed.
    """
    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    folds = min(n_splits, int(counts.min()))
    if groups is not None:
        folds = min(folds, len(np.unique(groups)))
    if folds < 2:
        raise ValueError(
            f"cross-validation needs at least 2 clips per word{' and 2 speakers' if groups is not None else ''}; "
            f"the smallest word has {int(counts.min())} clip(s). Take more samples per word."
        )
    if groups is not None:
        return list(
            StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(
                np.zeros(len(labels)), labels, groups
            )
        )
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def separability_scores(
    features, labels, groups=None, n_splits: int = 5, knn_k: int = 5, seed: int = 0, folds=None
) -> dict:
    """``knn_acc``, ``linear_acc`` (cross-validated: the mean over folds) and ``silhouette`` of one
    ``[clips, dims]`` matrix, plus the linear probe's held-out prediction of every clip
    (``linear_predictions``) and the Wilson 95% interval of its pooled accuracy (``linear_ci95``)."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features must be [clips, dims] with one label per clip; got {x.shape} and {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError("separability needs at least two different words")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or infinite values")
    folds = folds if folds is not None else separability_folds(y, groups, n_splits, seed)
    smallest_train = min(len(train) for train, _ in folds)
    knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=min(knn_k, smallest_train), metric="cosine"))
    linear = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on tiny folds
        knn_acc = cross_val_score(knn, x, y, cv=folds).mean()
        predicted = cross_val_predict(linear, x, y, cv=folds)  # the same fits cross_val_score would make
    linear_acc = np.mean([np.mean(predicted[test] == y[test]) for _, test in folds])
    scaled = StandardScaler().fit_transform(x)
    # constant features (e.g. an untrained codebook) have no cosine geometry: silhouette undefined
    silhouette = silhouette_score(scaled, y, metric="cosine") if np.ptp(scaled) > 0 else float("nan")
    return {
        "knn_acc": float(knn_acc),
        "linear_acc": float(linear_acc),
        "silhouette": float(silhouette),
        "folds": len(folds),
        "linear_ci95": list(accuracy_interval(int(np.sum(predicted == y)), len(y))),
        "linear_predictions": predicted,
    }


def layer_separability_table(
    model_views: dict, labels, groups=None, n_splits: int = 5, knn_k: int = 5, seed: int = 0, progress: bool = True
) -> pd.DataFrame:
    """Score every ``{model: {layer: [clips, dims]}}`` view; one row per model and layer.

    Columns: ``model, layer, position`` (0 = nearest the input), ``depth`` (position
    scaled to 0..1 within the model), ``dims, knn_acc, linear_acc, linear_ci95_low,
    linear_ci95_high, silhouette, chance``. All views must hold the same clips in the same order
    as ``labels``. ``table.attrs["linear_predictions"]`` maps ``(model, layer)`` to the linear
    probe's held-out predictions and ``table.attrs["labels"]`` holds the labels, to compare two
    layers on the same clips (`separability_headline`).
    """
    from tqdm.auto import tqdm

    labels = np.asarray(labels)
    folds = separability_folds(labels, groups, n_splits, seed)
    chance = float(pd.Series(labels).value_counts(normalize=True).max())
    jobs = [(model, layer, x) for model, views in model_views.items() for layer, x in views.items()]
    rows, predictions = [], {}
    for model, layer, x in tqdm(jobs, desc="separability", disable=not progress, leave=False):
        if len(x) != len(labels):
            raise ValueError(f"{model} layer {layer}: {len(x)} embeddings for {len(labels)} labels")
        scores = separability_scores(x, labels, folds=folds, knn_k=knn_k)
        predictions[(model, str(layer))] = scores["linear_predictions"]
        rows.append(
            {
                "model": model,
                "layer": str(layer),
                "dims": int(np.asarray(x).shape[1]),
                **{k: scores[k] for k in SEPARABILITY_METRICS},
                "linear_ci95_low": scores["linear_ci95"][0],
                "linear_ci95_high": scores["linear_ci95"][1],
                "chance": chance,
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["linear_predictions"], table.attrs["labels"] = predictions, labels
    is_layer = table["layer"] != "concat"
    position = table[is_layer].groupby("model").cumcount()
    table.insert(2, "position", position.reindex(table.index))
    last = table.groupby("model")["position"].transform("max")
    table["position"] = table["position"].fillna(last.fillna(-1) + 1).astype(int)  # "concat" comes after the layers
    depth = (table["position"] / last.replace(0, 1)).round(4)
    table.insert(3, "depth", depth.where(is_layer))
    return table


# %% [markdown]
# ## Reading the table: best layers and the headline
#
# Which layer of each model separates the labels best, which model and weights each row comes
# from, and the sentence the notebook prints about trained models against the baseline.


# %%
def best_layers(table: pd.DataFrame, metric: str = "linear_acc", include_concat: bool = False) -> pd.DataFrame:
    """The best layer of each model by ``metric`` (ties: the earlier layer), best model first.

    The concatenation of all layers is not a layer: it competes only with ``include_concat``.
    """
    if metric not in SEPARABILITY_METRICS:
        raise ValueError(f"metric must be one of {SEPARABILITY_METRICS}, not {metric!r}")
    if not include_concat:
        table = table[table["layer"] != "concat"]
    best = table.sort_values([metric, "position"], ascending=[False, True]).groupby("model", sort=False).head(1)
    return best.sort_values(metric, ascending=False).reset_index(drop=True)


def annotate_model_rows(table: pd.DataFrame, descriptions: dict) -> pd.DataFrame:
    """Say on every row which model, weights and Whisper mode it comes from.

    ``table``'s ``model`` column holds each variant's key (``adapter.label``, e.g.
    ``"bundled/whisper-tiny.en (padded mode)"``); ``descriptions`` maps a key to that variant's
    ``adapter.info()`` (or any dict with ``name``, ``weights``, ``whisper_mode``). Adds
    ``model_id``, ``weights`` (``"pretrained"``, ``"random"``, or ``"none"`` for a model-free
    baseline such as MFCC) and ``whisper_mode`` (``"padded"``, ``"clip"``, or ``"n/a"``) after
    the ``model`` column. A key missing from ``descriptions`` is an error.
    """
    missing = sorted(set(table["model"]) - set(descriptions))
    if missing:
        raise KeyError(f"no description (weights, Whisper mode) for model row(s) {missing}")
    out = table.copy()
    described = {key: descriptions[key] for key in out["model"].unique()}
    out.insert(1, "model_id", [str(described[m].get("name", m)) for m in out["model"]])
    out.insert(2, "weights", [described[m].get("weights") or "none" for m in out["model"]])
    out.insert(3, "whisper_mode", [described[m].get("whisper_mode") or "n/a" for m in out["model"]])
    return out


def separability_headline(
    table: pd.DataFrame, metric: str = "linear_acc", baseline: str = "mfcc", speakers_held_out: bool = True
) -> dict:
    """What the table says about trained models: each pretrained model's best layer against the baseline.

    Only rows with ``weights == "pretrained"`` count as findings (``annotate_model_rows`` first);
    random-weight rows are listed apart as ``controls`` (how much the architecture and input
    features give without training), never as a model's result. Returns ``{"metric",
    "speakers_held_out", "baseline", "best" (the best pretrained model's row or None),
    "models" (one entry per pretrained model, best first), "controls", "statement"}``, each
    entry with ``model, model_id, weights, whisper_mode, layer``, the score and
    ``margin_over_baseline``.
    """
    if "weights" not in table.columns:
        raise ValueError("annotate the table with annotate_model_rows (weights, whisper_mode) first")
    layers = table[(table["layer"] != "concat") & (table["model"] != baseline)]
    base_rows = table[table["model"] == baseline]
    base = float(base_rows[metric].max()) if len(base_rows) else None

    def entries(rows):
        found = []
        for row in best_layers(rows, metric).itertuples():
            value = float(getattr(row, metric))
            found.append(
                {
                    "model": row.model,
                    "model_id": row.model_id,
                    "weights": row.weights,
                    "whisper_mode": row.whisper_mode,
                    "layer": row.layer,
                    metric: round(value, 4),
                    "margin_over_baseline": None if base is None else round(value - base, 4),
                }
            )
        return found

    models = entries(layers[layers["weights"] == "pretrained"]) if len(layers) else []
    predictions, y = table.attrs.get("linear_predictions"), table.attrs.get("labels")
    if models and metric == "linear_acc" and predictions and y is not None:
        # the best layer against every other layer of its model on the same clips: which are not told apart?
        top = models[0]
        row = table[(table["model"] == top["model"]) & (table["layer"] == top["layer"])].iloc[0]
        top["linear_ci95"] = [round(float(row["linear_ci95_low"]), 4), round(float(row["linear_ci95_high"]), 4)]
        top["tied_layers"], below, compared_layers = {}, 0, 0
        best_predicted = predictions[(top["model"], top["layer"])]
        for other in layers[layers["model"] == top["model"]]["layer"]:
            if other != top["layer"] and (top["model"], other) in predictions:
                compared = paired_comparison(y, best_predicted, predictions[(top["model"], other)])
                compared_layers += 1
                if compared["mcnemar_p"] >= 0.05:
                    top["tied_layers"][other] = round(compared["mcnemar_p"], 3)
                else:
                    below += compared["only_first_right"] > compared["only_second_right"]
        # "every other layer is below it" only when some were compared and each one is, beyond chance
        top["all_others_below"] = 0 < compared_layers == below
    controls = entries(layers[layers["weights"] == "random"]) if (layers["weights"] == "random").any() else []
    held = "speakers held out" if speakers_held_out else "speakers shared between training and test"
    if models:
        top = models[0]
        mode = f", Whisper {top['whisper_mode']} mode" if top["whisper_mode"] not in (None, "n/a") else ""
        interval = f" (95% CI {top['linear_ci95'][0]:.3f}-{top['linear_ci95'][1]:.3f})" if "linear_ci95" in top else ""
        tied = top.get("tied_layers")
        statement = (
            f"{top['model_id']} (pretrained weights{mode}): best layer {top['layer']}, {metric} {top[metric]:.3f}"
            f"{interval} with {held}"
            + (f", {top['margin_over_baseline']:+.3f} over the {baseline} row ({base:.3f})" if base is not None else "")
            + (
                f"; not told apart from layer(s) {', '.join(tied)} on the same clips (McNemar p >= 0.05)"
                if tied
                else (
                    "; every other layer is below it beyond chance (McNemar p < 0.05)"
                    if top.get("all_others_below")
                    else ""
                )
            )
        )
    else:
        statement = (
            "no pretrained model was compared"
            + (": the random-weight rows are controls, not findings about a trained model" if controls else "")
            + (f"; {baseline} row {base:.3f}" if base is not None else "")
        )
    return {
        "metric": metric,
        "speakers_held_out": bool(speakers_held_out),
        "baseline": None if base is None else {"model": baseline, metric: round(base, 4)},
        "best": models[0] if models else None,
        "models": models,
        "controls": controls,
        "statement": statement,
    }


# %% [markdown]
# ## Plots
#
# Scores across relative depth, one line per model: a static three-panel figure and an interactive
# Plotly view.


# %%
def plot_layer_separability(table: pd.DataFrame, baseline_models=("mfcc",), title: str = ""):
    """Three panels (kNN, linear probe, silhouette) with one line per model across relative depth.

    Baseline models (one "layer"), each model's concatenation of all layers (dash-dot, in the
    model's colour) and the chance level are drawn as horizontal lines.
    Models whose rows say ``weights == "random"`` (``annotate_model_rows``) are dashed.
    """
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    names = {
        "knn_acc": "kNN accuracy (cross-validated)",
        "linear_acc": "linear-probe accuracy (cross-validated)",
        "silhouette": "silhouette (cosine)",
    }
    models = [m for m in table["model"].unique() if m not in baseline_models]
    annotate = len(models) <= 3  # layer names on the points; with more models, hover the interactive plot
    for ax, metric in zip(axes, SEPARABILITY_METRICS):
        for model in models:
            rows = table[(table["model"] == model) & (table["layer"] != "concat")]
            random = "weights" in rows.columns and (rows["weights"] == "random").any()
            line = ax.plot(
                rows["depth"],
                rows[metric],
                marker="o",
                linestyle="--" if random else "-",  # random-weight controls: dashed
                label=str(model).rstrip("/").split("/")[-1],
            )[0]
            for _, row in rows.iterrows() if annotate else ():
                ax.annotate(
                    row["layer"],
                    (row["depth"], row[metric]),
                    fontsize=7,
                    alpha=0.7,
                    textcoords="offset points",
                    xytext=(0, 4),
                    ha="center",
                )
            concat = table[(table["model"] == model) & (table["layer"] == "concat")]
            if len(concat):
                ax.axhline(concat[metric].iloc[0], color=line.get_color(), linestyle="-.", linewidth=1)
        for model in baseline_models:
            rows = table[table["model"] == model]
            if len(rows):
                ax.axhline(rows[metric].max(), color="black", linestyle="--", linewidth=1, label=f"{model} baseline")
        if (table["layer"] == "concat").any():
            ax.plot([], [], color="grey", linestyle="-.", linewidth=1, label="all layers concatenated")
        if metric != "silhouette" and len(table):
            ax.axhline(table["chance"].iloc[0], color="grey", linestyle=":", linewidth=1, label="chance")
            ax.set_ylim(0, 1.02)
        ax.set_xlabel("relative depth (0 = input side, 1 = last layer)")
        ax.set_title(names[metric], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_layer_separability_interactive(table: pd.DataFrame, metric: str = "linear_acc"):
    """Plotly line plot of ``metric`` across layers, hover shows model, layer and all scores."""
    import plotly.express as px

    data = table.copy()
    data["model_short"] = [str(m).rstrip("/").split("/")[-1] for m in data["model"]]
    fig = px.line(
        data,
        x="depth",
        y=metric,
        color="model_short",
        markers=True,
        hover_data={
            "layer": True,
            "knn_acc": ":.3f",
            "linear_acc": ":.3f",
            "silhouette": ":.3f",
            "dims": True,
            "depth": False,
        },
        labels={"depth": "relative depth (0 = input side)", "model_short": "model"},
        title=f"{metric} across layers",
    )
    if len(data):
        fig.add_hline(y=float(data["chance"].iloc[0]), line_dash="dot", annotation_text="chance")
    return fig
