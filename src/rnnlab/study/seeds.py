"""Summaries over seeds, shared by ``rnnlab sweep`` and ``rnnlab compare --seeds``: the mean, standard deviation
and 95 % Student-t interval of a final metric, and the table both print. NumPy and the standard library only
(scipy is optional in rnnlab), so the serial and pooled compare runners need nothing beyond the core install.
"""
from __future__ import annotations

import math

import numpy as np


# Student's t at 0.975 for 1..30 degrees of freedom (scipy.stats.t.ppf to 10 digits; scipy is optional)
_T975 = (12.7062047362, 4.3026527297, 3.1824463053, 2.7764451052, 2.5705818356, 2.4469118511, 2.3646242516,
         2.3060041352, 2.2621571628, 2.228138852, 2.2009851601, 2.1788128297, 2.1603686565, 2.1447866879,
         2.1314495456, 2.1199052992, 2.1098155778, 2.1009220402, 2.0930240544, 2.0859634473, 2.0796138447,
         2.0738730679, 2.0686576104, 2.0638985616, 2.0595385528, 2.0555294386, 2.0518305165, 2.0484071418,
         2.0452296421, 2.0422724563)


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t: the table, and beyond 30 degrees of freedom the Cornish-Fisher
    expansion around the normal quantile (within 3e-8 there)."""
    if df <= len(_T975):
        return _T975[df - 1]
    from statistics import NormalDist
    z = NormalDist().inv_cdf(0.975)
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4))


def interval(values):
    """(mean, sd, half-width of the 95 % interval) over seeds; sd and interval NaN for one seed."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return float(v.mean()), float("nan"), float("nan")
    sd = float(v.std(ddof=1))
    return float(v.mean()), sd, float(t975(len(v) - 1) * sd / math.sqrt(len(v)))


def table(summary) -> str:
    """A summary's rows (``sweep.summarize``, ``compare.summarize_seeds``) as a Markdown table."""
    m = summary["metric"]
    lines = [f"| configuration | seeds | val {m} mean | sd | 95 % interval | reached {m} "
             f"{'<=' if summary['mode'] == 'min' else '>='} {summary['threshold']:g} | median steps to it |",
             "|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        ci = "" if math.isnan(r["ci95"]) else f"[{r['mean'] - r['ci95']:.4g}, {r['mean'] + r['ci95']:.4g}]"
        sd = "" if math.isnan(r["sd"]) else f"{r['sd']:.3g}"
        st = "" if r["steps_to_threshold"] is None else f"{r['steps_to_threshold']:g}"
        lines.append(f"| {r['label']} | {r['seeds']} | {r['mean']:.4g} | {sd} | {ci} | {r['reached']}/{r['seeds']} "
                     f"| {st} |")
    return "\n".join(lines)
