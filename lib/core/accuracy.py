# %% [markdown]
# # An accuracy and its uncertainty
#
# `accuracy_interval(correct, total)`: the Wilson 95% interval of an accuracy measured on
# `total` clips (scipy's binomial test), the figure every notebook reports next to an accuracy
# on a test set, so that two numbers on a few hundred clips are not read as different when
# their intervals overlap.

# %%
from scipy.stats import binomtest


def accuracy_interval(correct: int, total: int, confidence: float = 0.95) -> tuple:
    """Wilson interval of an accuracy of ``correct`` out of ``total``; ``(nan, nan)`` when total is 0."""
    if total <= 0:
        return float("nan"), float("nan")
    interval = binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)
