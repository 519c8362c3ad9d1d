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
) -> dict:
    """Run ``fit_predict(train_idx, test_idx) -> predictions`` with each speaker held out once.

    ``train_idx``/``test_idx`` are integer positions into ``manifest``. Returns per-speaker
    accuracy, the mean and standard deviation over speakers, and the pooled accuracy.
    """
    from tqdm.auto import tqdm

    speakers = manifest[speaker_column].to_numpy()
    labels = manifest[label_column].to_numpy()
    unique = sorted(set(speakers.tolist()))
    if len(unique) < 2:
        raise ValueError(f"leave-one-speaker-out needs at least 2 speakers, found {unique}")
    per_speaker, seconds, correct = {}, {}, 0
    for speaker in tqdm(unique, desc="leave one speaker out", disable=not progress, leave=False):
        test_idx = np.flatnonzero(speakers == speaker)
        train_idx = np.flatnonzero(speakers != speaker)
        start = time.perf_counter()
        predictions = np.asarray(fit_predict(train_idx, test_idx))
        seconds[str(speaker)] = time.perf_counter() - start
        hits = predictions == labels[test_idx]
        per_speaker[str(speaker)] = float(hits.mean())
        correct += int(hits.sum())
    values = np.array(list(per_speaker.values()))
    return {
        "per_speaker_accuracy": per_speaker,
        "mean_accuracy": float(values.mean()),
        "std_accuracy": float(values.std()),
        "min_accuracy": float(values.min()),
        "pooled_accuracy": correct / len(manifest),
        "seconds_per_fold": seconds,
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
