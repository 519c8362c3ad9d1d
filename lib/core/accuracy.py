# %% [markdown]
# # An accuracy and its uncertainty
#
# `accuracy_interval(correct, total)`: the Wilson 95% interval of an accuracy measured on
# `total` clips (scipy's binomial test), the figure every notebook reports next to an accuracy
# on a test set, so that two numbers on a few hundred clips are not read as different when
# their intervals overlap. `paired_comparison(y, a, b)`: two classifiers on the same clips,
# McNemar's exact test on the clips only one of them gets right (is the difference more than
# chance?).

# %%
import numpy as np
from scipy.stats import binomtest


def accuracy_interval(correct: int, total: int, confidence: float = 0.95) -> tuple:
    """Wilson interval of an accuracy of ``correct`` out of ``total``; ``(nan, nan)`` when total is 0."""
    if total <= 0:
        return float("nan"), float("nan")
    interval = binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def paired_comparison(y, predicted_a, predicted_b) -> dict:
    """Two classifiers on the same clips: their accuracies, the clips only one of them gets right and
    McNemar's exact p-value (a binomial test on those discordant clips)."""
    y, a, b = np.asarray(y), np.asarray(predicted_a), np.asarray(predicted_b)
    if not len(y) == len(a) == len(b):
        raise ValueError(f"paired_comparison needs one prediction per clip from each: {len(y)}, {len(a)}, {len(b)}")
    only_a, only_b = int(((a == y) & (b != y)).sum()), int(((a != y) & (b == y)).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {
        "n": int(len(y)),
        "first_accuracy": float(np.mean(a == y)) if len(y) else float("nan"),
        "second_accuracy": float(np.mean(b == y)) if len(y) else float("nan"),
        "only_first_right": only_a,
        "only_second_right": only_b,
        "mcnemar_p": float(p),
    }
