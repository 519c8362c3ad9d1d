# %% [markdown]
# # Classifier evaluation: metrics, confusion matrix, speakers, latency
#
# - `classification_summary`: accuracy, macro F1, per-class precision / recall / F1 and
#   the confusion matrix (scikit-learn's metrics), plus per-speaker accuracy when speakers
#   are given.
# - `plot_confusion`: a confusion-matrix figure (counts, row-normalised colours).
# - `leave_one_speaker_out`: train on all speakers but one, test on the held-out speaker,
#   for every speaker. The official FSDD split puts the same six speakers in train and test,
#   so its accuracy mixes "recognises the digit" with "recognises the voice"; the mean
#   leave-one-speaker-out accuracy is the honest number for a new voice.
# - `measure_latency`: mean and p95 milliseconds of one prediction, over warm runs.

# %%
import time

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from lib.core.accuracy import accuracy_interval
from lib.core.subsets import speaker_folds


def classification_summary(y_true, y_pred, labels=None, speakers=None) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support, confusion matrix, per-speaker accuracy."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("nothing to evaluate: no predictions")
    labels = list(labels) if labels is not None else sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    summary = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "n": int(len(y_true)),
        "per_class": {
            str(label): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "labels": [str(label) for label in labels],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    if speakers is not None:
        speakers = np.asarray(speakers)
        summary["per_speaker_accuracy"] = {
            str(s): float(np.mean(y_true[speakers == s] == y_pred[speakers == s])) for s in sorted(set(speakers))
        }
    return summary


def plot_confusion(matrix, labels, title: str = "", ax=None):
    """Confusion matrix: counts written in the cells, colours normalised per true class."""
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    if ax is None:
        _fig, ax = plt.subplots(figsize=(4.6, 4.0))
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


def leave_one_speaker_out(
    fit_predict,
    manifest: pd.DataFrame,
    speaker_column: str = "speaker",
    label_column: str = "label",
    progress: bool = True,
    desc: str = "leave one speaker out",
    max_folds: int | None = None,
    seed: int = 0,
) -> dict:
    """Run ``fit_predict(train_idx, test_idx) -> predictions`` with each speaker held out once.

    ``train_idx``/``test_idx`` are integer positions into ``manifest``. Returns per-speaker
    accuracy, the mean and standard deviation over speakers, the pooled accuracy with its Wilson
    interval, and ``predictions`` (one per manifest row, to compare models clip by clip).
    ``max_folds``: with more speakers than this (AudioMNIST's 60, Speech Commands' thousands), the
    speakers are dealt, in a ``seed``-shuffled order, into that many folds, each held out together:
    every speaker is still scored by a model that never heard them, in ``max_folds`` fits.
    """
    from tqdm.auto import tqdm

    speakers = manifest[speaker_column].to_numpy()
    labels = manifest[label_column].to_numpy()
    unique = sorted(set(speakers.tolist()))
    if len(unique) < 2:
        raise ValueError(f"leave-one-speaker-out needs at least 2 speakers, found {unique}")
    folds = speaker_folds(unique, max_folds, seed)
    seconds = {}
    predicted = np.empty(len(manifest), dtype=object)
    for k, held_out in enumerate(tqdm(folds, desc=desc, disable=not progress, leave=False)):
        test = np.isin(speakers, held_out)
        start = time.perf_counter()
        predictions = np.asarray(fit_predict(np.flatnonzero(~test), np.flatnonzero(test)))
        fold_name = str(held_out[0]) if len(held_out) == 1 else f"fold {k + 1} ({len(held_out)} speakers)"
        seconds[fold_name] = time.perf_counter() - start
        predicted[np.flatnonzero(test)] = list(predictions)
    summary = loso_from_predictions(labels, predicted, speakers)
    fold_speakers = [[str(s) for s in held_out] for held_out in folds]
    return {
        **summary,
        "folds": len(folds),
        "fold_speakers": fold_speakers,
        "seconds_per_fold": seconds,
        "predictions": predicted,
    }


def loso_from_predictions(y_true, y_pred, speakers) -> dict:
    """The leave-one-speaker-out keys of held-out predictions (one per clip, each from the fold that held its
    speaker out): per speaker, mean, std, min, pooled, with the Wilson 95% interval of the pooled accuracy."""
    scores = held_out_scores(y_true, y_pred, np.asarray(speakers).astype(str))
    return {
        "per_speaker_accuracy": scores["per_group_accuracy"],
        "mean_accuracy": scores["mean_group_accuracy"],
        "std_accuracy": float(np.std(list(scores["per_group_accuracy"].values()))),
        "min_accuracy": scores["min_group_accuracy"],
        "pooled_accuracy": scores["accuracy"],
        "n": scores["n"],
        "ci95": scores["ci95"],
    }


def measure_latency(predict, example, warmup: int = 3, runs: int = 30) -> dict:
    """Milliseconds of ``predict(example)`` over ``runs`` warm calls: mean, p50, p95."""
    for _ in range(max(0, warmup)):
        predict(example)
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        predict(example)
        times.append((time.perf_counter() - start) * 1000.0)
    times = np.array(times)
    return {
        "mean_ms": float(times.mean()),
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
        "runs": int(len(times)),
    }


# %% [markdown]
# ## Held-out speakers and other recordings: tables, intervals, the LOSO plot


# %%
def held_out_scores(y_true, y_pred, groups=None) -> dict:
    """Accuracy (with its Wilson interval) of predictions that may be None (no answer counts as wrong).

    With ``groups`` (e.g. speakers or sub-folders) also per-group accuracy, mean and minimum.
    """
    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray(y_pred, dtype=object)
    hits = np.array([p is not None and p == t for t, p in zip(y_true, y_pred)], dtype=bool)
    low, high = accuracy_interval(int(hits.sum()), len(hits))
    scores = {
        "accuracy": float(hits.mean()) if len(hits) else float("nan"),
        "n": int(len(hits)),
        "correct": int(hits.sum()),
        "ci95": [low, high],
        "no_answer": int(sum(p is None for p in y_pred)),
    }
    if groups is not None:
        by_group = pd.Series(hits).groupby(np.asarray(groups)).agg(["mean", "size"])
        per = {str(g): float(v) for g, v in by_group["mean"].items()}
        scores["per_group_accuracy"] = per
        scores["per_group_n"] = {str(g): int(v) for g, v in by_group["size"].items()}
        scores["mean_group_accuracy"] = float(np.mean(list(per.values())))
        scores["min_group_accuracy"] = float(np.min(list(per.values())))
    return scores


def hardest_speakers(per_speaker: dict, n: int) -> list:
    """The ``n`` speakers with the lowest accuracy averaged over the models of ``{model: {speaker: accuracy}}``,
    hardest first (ties in name order)."""
    speakers = sorted({s for values in per_speaker.values() for s in values})
    difficulty = {s: np.nanmean([values.get(s, np.nan) for values in per_speaker.values()]) for s in speakers}
    return sorted(speakers, key=lambda s: difficulty[s])[:n]


def plot_leave_one_speaker_out(
    per_speaker: dict, title: str = "Leave one speaker out", ax=None, clips=None, max_speakers: int = 30
):
    """Grouped bars: accuracy on each held-out speaker, one colour per model; mean and minimum (over every
    speaker) in the legend; with more than ``max_speakers`` speakers, bars for the hardest ``max_speakers``.

    ``per_speaker``: ``{model: {speaker: accuracy}}``. ``clips``: ``{model: {speaker: n}}`` (or one ``n``
    per model), the clips behind each bar: the bars then carry their Wilson 95% intervals, so that a
    bar scored on 20 clips does not look as firm as one scored on 500. Returns the figure, or None
    when there is nothing to plot.
    """
    import matplotlib.pyplot as plt

    per_speaker = {name: values for name, values in per_speaker.items() if values}
    if not per_speaker:
        return None
    speakers = sorted({s for values in per_speaker.values() for s in values})
    legend = {
        name: (np.mean([v for v in values.values() if v == v]), np.min([v for v in values.values() if v == v]))
        for name, values in per_speaker.items()
    }
    if len(speakers) > max_speakers:
        title = f"{title} (the {max_speakers} hardest of {len(speakers)} speakers)"
        speakers = sorted(hardest_speakers(per_speaker, max_speakers))
    if ax is None:
        _fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(speakers) + 2), 3.4))
    width = 0.8 / len(per_speaker)
    for k, (name, values) in enumerate(per_speaker.items()):
        heights = [values.get(s, np.nan) for s in speakers]
        counts = (clips or {}).get(name)
        errors = None
        if counts is not None:  # Wilson interval of each bar, as distances below and above it
            ns = [counts.get(s, 0) if isinstance(counts, dict) else counts for s in speakers]
            bounds = [accuracy_interval(round(h * n), n) if n and h == h else (h, h) for h, n in zip(heights, ns)]
            errors = np.array([[h - lo, hi - h] for h, (lo, hi) in zip(heights, bounds)]).T
        ax.bar(
            np.arange(len(speakers)) + (k - (len(per_speaker) - 1) / 2) * width,
            heights,
            width,
            yerr=errors,
            capsize=2 if errors is not None else 0,
            error_kw={"elinewidth": 0.8},
            label=f"{name}: mean {legend[name][0]:.3f}, min {legend[name][1]:.3f}",
        )
    ax.set_xticks(range(len(speakers)), speakers)
    ax.set_ylabel("accuracy on the unseen speaker")
    shown = set(speakers)
    low = min(v for values in per_speaker.values() for s, v in values.items() if v == v and s in shown)
    bottom = max(0.0, min(0.9, low - 0.05))
    ax.set_ylim(bottom, 1.02)  # room above the bars at 1.0 and their intervals
    if bottom > 0:
        ax.set_ylabel(f"accuracy on the unseen speaker\n(axis from {bottom:.2f})")
    if clips:
        ax.text(1.0, -0.1, "bars: Wilson 95% interval", transform=ax.transAxes, ha="right", va="top", fontsize=7)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    ax.set_title(title)
    return ax.figure
