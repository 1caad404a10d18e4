"""Small-sample statistics for the experiment tables (Student's t).

The t distribution comes from :mod:`scipy.special` (scipy is installed with
scikit-learn); the tests check these helpers against :mod:`scipy.stats`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _values(name, values, min_n=2):
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < min_n or not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: need at least {min_n} finite values, got {v.size}")
    return v


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1) and 95 % t interval of the mean."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float

    @property
    def half_width(self):
        return (self.hi - self.lo) / 2


def t_quantile(q, df):
    """Quantile of Student's t distribution.

    Examples
    --------
    >>> from pywino3d.experiments.stats import t_quantile
    >>> round(t_quantile(0.975, 4), 4)
    2.7764
    """
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def summarize(values, level=0.95):
    """Mean, sample std and ``level`` confidence interval of the mean (t-based).

    Examples
    --------
    >>> from pywino3d.experiments.stats import summarize
    >>> s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    >>> s.mean, round(s.sd, 4), round(s.lo, 4), round(s.hi, 4)
    (3.0, 1.5811, 1.0368, 4.9632)
    """
    v = _values("values", values)
    n, mean, sd = v.size, float(v.mean()), float(v.std(ddof=1))
    h = t_quantile(0.5 + level / 2, n - 1) * sd / np.sqrt(n)
    return Summary(n, mean, sd, float(mean - h), float(mean + h))


@dataclass(frozen=True)
class Paired:
    """A paired t-test of ``a - b``: mean difference, its 95 % interval and the two-sided p."""

    n: int
    diff: float
    lo: float
    hi: float
    p: float

    @property
    def verdict(self):
        """"higher" / "lower" when the interval excludes 0, else "no difference detected"."""
        if self.lo > 0:
            return "higher"
        if self.hi < 0:
            return "lower"
        return "no difference detected"


def paired_test(a, b, level=0.95):
    """Paired t-test of ``a`` against ``b`` (pairs: same seed).

    Examples
    --------
    >>> from pywino3d.experiments.stats import paired_test
    >>> r = paired_test([0.80, 0.82, 0.81, 0.85, 0.81], [0.78, 0.80, 0.80, 0.81, 0.77])
    >>> round(r.diff, 3), round(r.p, 4), r.verdict
    (0.026, 0.0123, 'higher')
    """
    from scipy.special import stdtr

    a, b = _values("a", a), _values("b", b)
    if a.size != b.size:
        raise ValueError(f"a, b: paired samples need equal lengths, got {a.size} and {b.size}")
    d = a - b
    n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    if se == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(2 * stdtr(n - 1, -abs(mean) / se))
    h = t_quantile(0.5 + level / 2, n - 1) * se
    return Paired(n, mean, float(mean - h), float(mean + h), p)


@dataclass(frozen=True)
class LrChoice:
    """The learning rate chosen over several tuning seeds, and its margin to the runner-up.

    ``margin`` is the chosen rate's mean validation score minus the
    runner-up's; ``paired`` the paired test of the two over the tuning seeds
    (None with a single tuning seed or a single rate).
    """

    lr: float
    runner_up: float
    margin: float
    paired: Paired | None

    @property
    def settled(self):
        """True when the paired interval of the margin excludes 0 (the choice does not hang on one seed)."""
        return self.paired is not None and self.paired.lo > 0


def choose_lr(scores):
    """The rate with the best mean validation score over the tuning seeds (ties: the smaller rate).

    Parameters
    ----------
    scores : dict float -> list of float
        Validation scores of each rate, one per tuning seed (same seed order).

    Examples
    --------
    >>> from pywino3d.experiments.stats import choose_lr
    >>> c = choose_lr({0.01: [0.80, 0.82, 0.81], 0.03: [0.70, 0.75, 0.72]})
    >>> c.lr, c.runner_up, round(c.margin, 3), c.settled
    (0.01, 0.03, 0.087, True)
    """
    if not scores:
        raise ValueError("scores: need at least one learning rate")
    lengths = {len(v) for v in scores.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"scores: need the same number (>= 1) of tuning seeds for every rate, got {sorted(lengths)}")
    ranked = sorted(scores, key=lambda lr: (-float(np.mean(scores[lr])), lr))
    best = ranked[0]
    if len(ranked) == 1:
        return LrChoice(best, best, 0.0, None)
    second = ranked[1]
    margin = float(np.mean(scores[best]) - np.mean(scores[second]))
    paired = paired_test(scores[best], scores[second]) if lengths.pop() >= 2 else None
    return LrChoice(best, second, margin, paired)


def agreement(verdicts):
    """Whether the verdicts of the same comparison in several passes agree: (robust, the verdict or "split").

    Examples
    --------
    >>> from pywino3d.experiments.stats import agreement
    >>> agreement(["higher", "higher"]), agreement(["higher", "no difference detected"])
    ((True, 'higher'), (False, 'split'))
    """
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("verdicts: need at least one")
    if len(set(verdicts)) == 1:
        return len(verdicts) >= 2, verdicts[0]
    return False, "split"
