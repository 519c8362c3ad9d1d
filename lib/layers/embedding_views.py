# %% [markdown]
# # Embedding views: PCA, t-SNE and UMAP maps of layer embeddings
#
# `reduce_layer_embeddings` maps `[clips, dims]` embeddings to 2-D or 3-D with PCA
# (linear, fast, shows the dominant directions), t-SNE (local neighbourhoods) or UMAP
# (neighbourhoods and some global structure; the first call compiles numba code, which takes
# a while). Features are z-scored first. `embedding_scatter` draws one map as an interactive
# Plotly figure coloured by word, with the word, speaker and file of each point on hover;
# `layer_grid_figure` puts one map per layer side by side, so you can watch word clusters
# form (or dissolve) with depth; `layer_grid_png` draws the same grid with matplotlib for a
# static report.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler

REDUCTION_METHODS = ("pca", "tsne", "umap")


def reduce_layer_embeddings(features, method: str = "pca", n_components: int = 2, seed: int = 0) -> np.ndarray:
    """``[clips, n_components]`` coordinates of z-scored ``features`` by PCA, t-SNE or UMAP."""
    if method not in REDUCTION_METHODS:
        raise ValueError(f"reduction must be one of {REDUCTION_METHODS}, not {method!r}")
    if n_components not in (2, 3):
        raise ValueError(f"n_components must be 2 or 3, not {n_components}")
    x = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))
    n = len(x)
    if n <= n_components:
        raise ValueError(f"need more than {n_components} clips to reduce to {n_components}-D, got {n}")
    if np.ptp(x) == 0:  # every clip has the same features (e.g. an untrained codebook): nothing to map
        print("reduce_layer_embeddings: the features are constant; every point maps to the origin")
        return np.zeros((n, n_components), dtype=np.float32)
    if method == "pca":
        coords = PCA(n_components=min(n_components, x.shape[1]), random_state=seed).fit_transform(x)
        if coords.shape[1] < n_components:  # fewer dims than components: pad with zeros
            coords = np.pad(coords, ((0, 0), (0, n_components - coords.shape[1])))
        return coords.astype(np.float32)
    if x.shape[1] > 50:  # the usual PCA pre-reduction before neighbour embeddings
        x = PCA(n_components=min(50, n - 1), random_state=seed).fit_transform(x)
    # identical points make the Barnes-Hut tree of t-SNE recurse without end (a crash, not an error):
    # a deterministic jitter far below the data's scale separates them
    x = x + np.random.default_rng(seed).normal(scale=1e-6 * (x.std() + 1e-12), size=x.shape)
    if method == "tsne":
        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        return (
            TSNE(n_components=n_components, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto")
            .fit_transform(x)
            .astype(np.float32)
        )
    import umap

    reducer = umap.UMAP(
        n_components=n_components, n_neighbors=int(min(15, max(2, n - 1))), random_state=seed, min_dist=0.1
    )
    return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def _hover_columns(table: pd.DataFrame, hover) -> list:
    return [c for c in hover if c in table.columns]


def embedding_scatter(
    coords, table: pd.DataFrame, color: str = "word", hover=("word", "speaker", "file"), title: str = ""
):
    """Interactive 2-D or 3-D Plotly scatter of ``coords`` (one row of ``table`` per point)."""
    import plotly.express as px

    coords = np.asarray(coords)
    data = table.reset_index(drop=True).copy()
    if len(data) != len(coords):
        raise ValueError(f"{len(coords)} points but {len(data)} table rows")
    axes = ["x", "y", "z"][: coords.shape[1]]
    for i, axis in enumerate(axes):
        data[axis] = coords[:, i]
    hover_data = {c: True for c in _hover_columns(data, hover)}
    hover_data.update({axis: False for axis in axes})
    if coords.shape[1] == 3:
        fig = px.scatter_3d(data, x="x", y="y", z="z", color=color, hover_data=hover_data, title=title)
        fig.update_traces(marker={"size": 3})
    else:
        fig = px.scatter(data, x="x", y="y", color=color, hover_data=hover_data, title=title)
        fig.update_traces(marker={"size": 6, "opacity": 0.8})
    fig.update_layout(legend_title_text=color, height=550)
    return fig


# %% [markdown]
# ## One panel per layer
#
# The same reduction for every layer's view, drawn as a grid of interactive panels or as one
# static figure.


# %%
def reduce_layer_grid(
    views: dict, method: str = "pca", n_components: int = 2, seed: int = 0, progress: bool = True
) -> dict:
    """``{layer: coords}`` for every ``{layer: [clips, dims]}`` view."""
    from tqdm.auto import tqdm

    return {
        layer: reduce_layer_embeddings(x, method, n_components, seed)
        for layer, x in tqdm(list(views.items()), desc=f"{method} per layer", disable=not progress, leave=False)
    }


def layer_grid_figure(
    layer_coords: dict,
    table: pd.DataFrame,
    color: str = "word",
    hover=("word", "speaker", "file"),
    columns: int = 4,
    title: str = "",
):
    """One interactive panel per layer (2-D or 3-D), coloured by ``color``, with hover details."""
    import plotly.express as px
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    layers = list(layer_coords)
    if not layers:
        raise ValueError("layer_grid_figure got no layers")
    three_d = np.asarray(layer_coords[layers[0]]).shape[1] == 3
    columns = max(1, min(columns, len(layers)))
    rows = math.ceil(len(layers) / columns)
    specs = [[{"type": "scene" if three_d else "xy"} for _ in range(columns)] for _ in range(rows)]
    fig = make_subplots(
        rows=rows,
        cols=columns,
        specs=specs,
        subplot_titles=[f"layer {layer}" for layer in layers],
        horizontal_spacing=0.03,
        vertical_spacing=0.08,
    )
    data = table.reset_index(drop=True)
    hover_cols = _hover_columns(data, hover)
    text = ["<br>".join(f"{c}: {data.at[i, c]}" for c in hover_cols) for i in range(len(data))]
    values = list(dict.fromkeys(data[color].astype(str)))
    palette = px.colors.qualitative.Plotly + px.colors.qualitative.Dark24
    for k, layer in enumerate(layers):
        coords = np.asarray(layer_coords[layer])
        row, col = k // columns + 1, k % columns + 1
        for v, value in enumerate(values):
            mask = (data[color].astype(str) == value).to_numpy()
            common = dict(
                mode="markers",
                name=value,
                legendgroup=value,
                showlegend=k == 0,
                text=[t for t, m in zip(text, mask) if m],
                hovertemplate="%{text}<extra></extra>",
                marker={"size": 3 if three_d else 5, "color": palette[v % len(palette)]},
            )
            if three_d:
                trace = go.Scatter3d(x=coords[mask, 0], y=coords[mask, 1], z=coords[mask, 2], **common)
            else:
                trace = go.Scatter(x=coords[mask, 0], y=coords[mask, 1], **common)
            fig.add_trace(trace, row=row, col=col)
    fig.update_layout(height=320 * rows, title=title, legend_title_text=color)
    if not three_d:
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False)
    return fig


def layer_grid_png(layer_coords: dict, table: pd.DataFrame, color: str = "word", columns: int = 4, title: str = ""):
    """The layer grid as a static matplotlib figure (first two coordinates of each layer)."""
    layers = list(layer_coords)
    columns = max(1, min(columns, len(layers)))
    rows = math.ceil(len(layers) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.4 * rows), squeeze=False)
    values = list(dict.fromkeys(table[color].astype(str)))
    cmap = plt.get_cmap("tab10" if len(values) <= 10 else "tab20")
    labels = table[color].astype(str).to_numpy()
    for ax, layer in zip(axes.flat, layers):
        coords = np.asarray(layer_coords[layer])
        for v, value in enumerate(values):
            mask = labels == value
            ax.scatter(coords[mask, 0], coords[mask, 1], s=8, color=cmap(v % cmap.N), label=value, alpha=0.8)
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(layers) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, markerscale=1.5, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
