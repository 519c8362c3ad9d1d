# %% [markdown]
# # What the explorer shows in the notebook: query tables, contact sheets, the geo map, the benchmark
#
# Displays that need no App: a table of a query's nearest clips with an audio player per row,
# a contact sheet of their spectrograms, a Plotly map of the clips' locations (no map token:
# Plotly's own world outline) with the box of a geographic filter drawn on it, and the stage
# table of an `audiolens bench explorer` run.

# %%
import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.audio import AudioLoadError, load_audio


def explorer_audio_tag(path, max_seconds: float = 10.0, sample_rate: int = 16000) -> str:
    """An HTML ``<audio controls>`` element holding (the first ``max_seconds`` of) a clip as 16-bit WAV."""
    import soundfile as sf

    try:
        y = load_audio(path, sr=sample_rate, max_seconds=max_seconds)
    except AudioLoadError as error:
        return f"<i>unreadable: {html.escape(error.problem)}</i>"
    buffer = io.BytesIO()
    sf.write(buffer, y, sample_rate, format="WAV", subtype="PCM_16")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<audio controls preload="none" src="data:audio/wav;base64,{data}"></audio>'


def explorer_query_table(rows: pd.DataFrame, label_column: str = "label", players: int = 20, max_seconds=10.0):
    """HTML table of query results (``rows``: ``path``, label, ``score`` ...) with an audio player per row."""
    head = (
        ["#", "clip", label_column, "distance"] + [c for c in ("speaker", "src_file", "fold") if c in rows] + ["listen"]
    )
    lines = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for rank, row in enumerate(rows.itertuples(index=False), start=1):
        row = row._asdict()
        cells = [rank, Path(row["path"]).name, row.get(label_column, ""), f"{row.get('distance', float('nan')):.3f}"]
        cells += [row.get(c, "") for c in ("speaker", "src_file", "fold") if c in rows]
        player = explorer_audio_tag(row["path"], max_seconds) if rank <= players else ""
        lines.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + f"<td>{player}</td></tr>")
    return "\n".join(lines + ["</table>"])


def write_query_demo(source, folder, reader) -> str:
    """A query file made from ``source``: audio re-written as 44.1 kHz FLAC (another format and rate than the
    data set's), any other signal copied as it is; return its path."""
    import shutil

    import librosa
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if getattr(reader, "signal", "audio") != "audio":  # copy the recording with its sidecars (same stem)
        stem = Path(source).name.split(".")[0]
        for companion in Path(source).parent.glob(f"{stem}.*"):
            shutil.copy(companion, folder / companion.name)
        return str(folder / Path(source).name)
    y, rate = reader(source)
    target = folder / f"{Path(source).stem}-44k.flac"
    sf.write(target, librosa.resample(np.asarray(y, dtype=np.float32), orig_sr=rate, target_sr=44100), 44100)
    return str(target)


def explorer_contact_sheet(paths, labels, title: str, columns: int = 5):
    """Matplotlib grid of spectrogram previews titled by label."""
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(paths) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 1.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, path, label in zip(axes.ravel(), paths, labels):
        ax.imshow(plt.imread(path), aspect="auto")
        ax.set_title(str(label), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# %% [markdown]
# ## The geo map


# %%
def explorer_geo_box(lonlat, mask, margin: float = 0.5):
    """``(lon_min, lat_min, lon_max, lat_max)`` around the points selected by ``mask``."""
    points = np.asarray(lonlat)[np.asarray(mask)]
    lo, hi = points.min(axis=0) - margin, points.max(axis=0) + margin
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def explorer_geo_figure(frame: pd.DataFrame, color: str, box=None, title: str = "", hover=()):
    """Plotly ``scatter_geo`` of ``frame`` (``lon``, ``lat`` columns) coloured by ``color``; ``box`` drawn in black.

    Needs no map token: the base map is Plotly's own Natural Earth outline.
    """
    import plotly.express as px
    import plotly.graph_objects as go

    figure = px.scatter_geo(
        frame.assign(**{color: frame[color].astype(str)}),
        lon="lon",
        lat="lat",
        color=color,
        hover_name="file" if "file" in frame else None,
        hover_data=[c for c in hover if c in frame],
        projection="natural earth",
        title=title,
        height=520,
    )
    if box is not None:
        x0, y0, x1, y1 = box
        figure.add_trace(
            go.Scattergeo(
                lon=[x0, x1, x1, x0, x0],
                lat=[y0, y0, y1, y1, y0],
                mode="lines",
                line={"color": "black", "width": 2},
                name="filter box",
            )
        )
    figure.update_traces(marker={"size": 5}, selector={"mode": "markers"})
    figure.update_geos(showcountries=True, showland=True, landcolor="#eeeeee")
    return figure


# %% [markdown]
# ## The benchmark's stage table


# %%
def explorer_bench_table(bench) -> pd.DataFrame:
    """The stage table of a ``bench.json`` (a path or the loaded dict): one row per run, seconds per stage."""
    if not isinstance(bench, dict):
        bench = json.loads(Path(bench).expanduser().read_text())
    rows = []
    for run in bench.get("runs", []):
        row = {"run": run.get("name"), "encoder": run.get("encoder"), "clips": run.get("n_clips")}
        row.update({stage: seconds for stage, seconds in run.get("stages", {}).items()})
        row["total"] = run.get("total_seconds")
        row["peak RSS (MiB)"] = run.get("peak_rss_mib")
        rows.append(row)
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()
