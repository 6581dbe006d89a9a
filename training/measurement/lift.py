"""Lift of experiment arms over the holdout, with intervals, SRM check and breakdowns.

Methods (all two-sided, 95 % by default):

* **Absolute lift** (arm mean - holdout mean): Welch's t interval (unequal variances,
  Welch-Satterthwaite degrees of freedom); the p-value is Welch's t-test.
* **Relative lift** (arm mean / holdout mean - 1): delta method on the log of the ratio of
  the two independent means, ``Var(log r) ~ s_t^2/(n_t m_t^2) + s_c^2/(n_c m_c^2)``, the
  interval is exponentiated back (so it is asymmetric and never below -100 %).
* **Sample-ratio mismatch**: Pearson chi-square of the number of distinct units per arm
  against the configured shares (global holdout ``h``; arm ``a`` gets ``(1 - h) * share_a``).
  ``p < 0.001`` is flagged loudly: the allocation or the logging is broken and the lift
  figures cannot be trusted.

Decision-level metrics (conversion rate, revenue per decision) treat decisions as
independent; when customers get many decisions the customer-level metric (revenue per
customer: all of a customer's revenue in the experiment, averaged over customers) is the
one whose interval respects the unit of randomisation.

The input is a flat frame: ``experiment``, ``arm``, ``holdout``, ``unit`` and one column
per metric (optionally ``ts`` for the time plot and breakdown columns), so the same code
serves the service's decision log and any other experiment (see :mod:`training.measurement.hillstrom_validation`).
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

__all__ = [
    "LiftReport",
    "Metric",
    "SRMResult",
    "build_report",
    "configured_shares",
    "decision_frame",
    "forest_figure",
    "relative_delta",
    "render_html",
    "render_text",
    "srm_check",
    "welch",
    "write_forest_png",
]

F64 = npt.NDArray[np.float64]
SRM_ALPHA = 0.001


@dataclass(frozen=True)
class Metric:
    name: str
    column: str
    level: Literal["decision", "unit"] = "decision"  # unit: summed per unit first


DEFAULT_METRICS = (
    Metric("conversion rate", "converted"),
    Metric("revenue / decision", "revenue"),
    Metric("revenue / customer", "revenue", "unit"),
)


def welch(x_t: F64, x_c: F64, alpha: float = 0.05) -> tuple[float, float, float, float]:
    """(difference of means, low, high, p-value) by Welch's t."""
    n_t, n_c = len(x_t), len(x_c)
    if n_t < 2 or n_c < 2:
        return float("nan"), float("nan"), float("nan"), float("nan")
    m_t, m_c = float(np.mean(x_t)), float(np.mean(x_c))
    v_t, v_c = float(np.var(x_t, ddof=1)) / n_t, float(np.var(x_c, ddof=1)) / n_c
    diff = m_t - m_c
    se = math.sqrt(v_t + v_c)
    if se == 0:
        return diff, diff, diff, 1.0 if diff == 0 else 0.0
    dof = (v_t + v_c) ** 2 / (v_t**2 / (n_t - 1) + v_c**2 / (n_c - 1))
    q = float(stats.t.ppf(1 - alpha / 2, dof))
    p = float(2 * stats.t.sf(abs(diff) / se, dof))
    return diff, diff - q * se, diff + q * se, p


def relative_delta(x_t: F64, x_c: F64, alpha: float = 0.05) -> tuple[float, float, float]:
    """(m_t/m_c - 1, low, high): delta method on log(m_t/m_c)."""
    n_t, n_c = len(x_t), len(x_c)
    if n_t < 2 or n_c < 2:
        return float("nan"), float("nan"), float("nan")
    m_t, m_c = float(np.mean(x_t)), float(np.mean(x_c))
    if m_t <= 0 or m_c <= 0:
        return (m_t / m_c - 1) if m_c > 0 else float("nan"), float("nan"), float("nan")
    v_t, v_c = float(np.var(x_t, ddof=1)), float(np.var(x_c, ddof=1))
    se = math.sqrt(v_t / (n_t * m_t**2) + v_c / (n_c * m_c**2))
    z = float(stats.norm.ppf(1 - alpha / 2))
    r = math.log(m_t / m_c)
    return math.exp(r) - 1, math.exp(r - z * se) - 1, math.exp(r + z * se) - 1


@dataclass(frozen=True)
class SRMResult:
    experiment: str
    observed: dict[str, int]
    expected_share: dict[str, float]
    chi2: float
    p_value: float
    unknown_arms: list[str] = field(default_factory=list)

    @property
    def mismatch(self) -> bool:
        return bool(self.p_value < SRM_ALPHA) or bool(self.unknown_arms)


def srm_check(experiment: str, counts: dict[str, int], shares: dict[str, float]) -> SRMResult:
    """Chi-square goodness of fit of unit counts per arm against the configured shares."""
    unknown = sorted(a for a, n in counts.items() if a not in shares and n > 0)
    arms = [a for a in shares if shares[a] > 0]
    obs = np.array([counts.get(a, 0) for a in arms], dtype=np.float64)
    total = obs.sum()
    if total == 0 or len(arms) < 2:
        return SRMResult(experiment, dict(counts), shares, float("nan"), 1.0, unknown)
    p = np.array([shares[a] for a in arms], dtype=np.float64)
    exp = total * p / p.sum()
    chi2, pv = stats.chisquare(obs, exp)
    return SRMResult(experiment, dict(counts), shares, float(chi2), float(pv), unknown)


def configured_shares(policy: Any) -> dict[str, dict[str, float]]:
    """experiment -> arm -> expected share of units, from a ``PolicyConfig``."""
    exps = policy.experiments
    h = float(exps.global_holdout)
    out: dict[str, dict[str, float]] = {}
    for name, e in exps.definitions.items():
        shares = {"holdout": h} if h > 0 else {}
        for a in e.arms:
            shares[a.name] = (1 - h) * float(a.share)
        out[name] = shares
    return out


def decision_frame(outcomes: pd.DataFrame, profiles: pd.DataFrame | None = None) -> pd.DataFrame:
    """The exported decision log with outcomes -> the flat frame :func:`build_report` takes.

    Opted-out records (no unit, no arm) are dropped. ``channel``/``offer`` are the *treated*
    action: the action taken, or for holdout decisions the action they would have got, so
    breakdowns compare like with like. ``lifecycle`` is joined from ``profiles`` when given.
    """
    df = outcomes[~outcomes["opted_out"] & outcomes["unit"].notna()].copy()
    df["experiment"] = df["experiment"].fillna("default").astype(str)
    df["arm"] = df["arm"].astype(str)
    df["holdout"] = df["holdout"].astype(bool) | (df["arm"] == "holdout")
    df["channel"] = df["action_channel"].fillna(df["would_have_channel"]).fillna("none")
    df["offer"] = df["action_offer"].fillna(df["would_have_offer"]).fillna("none")
    df["converted"] = df["converted"].astype(np.float64)
    df["revenue"] = df["revenue"].astype(np.float64)
    if profiles is not None and "lifecycle" in profiles:
        names = {0: "new", 1: "active", 2: "lapsing"}
        lc = profiles.drop_duplicates("customer_id", keep="last").set_index("customer_id")
        df["lifecycle"] = df["unit"].map(lc["lifecycle"].map(lambda v: names.get(v, v)))
        df["lifecycle"] = df["lifecycle"].fillna("unknown").astype(str)
    return df.reset_index(drop=True)


@dataclass
class LiftReport:
    lift: pd.DataFrame  # one row per experiment x arm x metric
    means: pd.DataFrame  # one row per experiment x arm x metric (incl. holdout)
    srm: list[SRMResult]
    breakdowns: dict[str, pd.DataFrame]
    daily: pd.DataFrame  # experiment, arm, day, decisions, conversion rate
    title: str = "Lift report"
    notes: list[str] = field(default_factory=list)


def _values(df: pd.DataFrame, m: Metric) -> F64:
    if m.level == "unit":
        out: F64 = df.groupby("unit")[m.column].sum().to_numpy(dtype=np.float64)
        return out
    out = df[m.column].to_numpy(dtype=np.float64)
    return out


def _compare(
    exp: str, arm: str, t: pd.DataFrame, c: pd.DataFrame, m: Metric, alpha: float
) -> dict[str, Any]:
    xt, xc = _values(t, m), _values(c, m)
    d, lo, hi, p = welch(xt, xc, alpha)
    r, rlo, rhi = relative_delta(xt, xc, alpha)
    return {
        "experiment": exp,
        "arm": arm,
        "metric": m.name,
        "n_arm": len(xt),
        "n_holdout": len(xc),
        "arm_mean": float(np.mean(xt)) if len(xt) else float("nan"),
        "holdout_mean": float(np.mean(xc)) if len(xc) else float("nan"),
        "abs_lift": d,
        "abs_low": lo,
        "abs_high": hi,
        "rel_lift": r,
        "rel_low": rlo,
        "rel_high": rhi,
        "p_value": p,
    }


def build_report(
    df: pd.DataFrame,
    shares: dict[str, dict[str, float]],
    metrics: tuple[Metric, ...] = DEFAULT_METRICS,
    breakdowns: tuple[str, ...] = ("channel", "offer", "lifecycle"),
    alpha: float = 0.05,
    min_segment: int = 30,
    title: str = "Lift report",
) -> LiftReport:
    """Lift per experiment and arm vs the holdout (rows with ``holdout`` True)."""
    lift_rows: list[dict[str, Any]] = []
    mean_rows: list[dict[str, Any]] = []
    srm: list[SRMResult] = []
    bd_rows: dict[str, list[dict[str, Any]]] = {b: [] for b in breakdowns if b in df}
    notes: list[str] = []
    for exp, e in df.groupby("experiment", sort=True):
        exp = str(exp)
        control = e[e["holdout"]]
        counts = {str(a): int(g["unit"].nunique()) for a, g in e.groupby("arm")}
        if exp in shares:
            srm.append(srm_check(exp, counts, shares[exp]))
        else:
            notes.append(f"experiment {exp!r} is not configured: no SRM check")
        for arm, g in e.groupby("arm", sort=True):
            arm = str(arm)
            for m in metrics:
                x = _values(g, m)
                mean_rows.append(
                    {
                        "experiment": exp,
                        "arm": arm,
                        "metric": m.name,
                        "n": len(x),
                        "mean": float(np.mean(x)) if len(x) else float("nan"),
                    }
                )
            if g["holdout"].all():
                continue
            if control.empty:
                notes.append(f"experiment {exp!r}: no holdout decisions, no lift")
                continue
            for m in metrics:
                lift_rows.append(_compare(exp, arm, g, control, m, alpha))
            for b in bd_rows:
                for level, gl in g.groupby(b, sort=True):
                    cl = control[control[b] == level]
                    if len(gl) < min_segment or len(cl) < min_segment:
                        continue
                    for m in metrics[:2]:
                        row = _compare(exp, arm, gl, cl, m, alpha)
                        row[b] = level
                        bd_rows[b].append(row)
    daily = pd.DataFrame(columns=["experiment", "arm", "day", "decisions", "conversion rate"])
    if "ts" in df and df["ts"].notna().any() and "converted" in df:
        d = df.assign(day=pd.to_datetime(df["ts"]).dt.floor("D"))
        daily = (
            d.groupby(["experiment", "arm", "day"])["converted"]
            .agg(["size", "mean"])
            .reset_index()
            .rename(columns={"size": "decisions", "mean": "conversion rate"})
        )
    return LiftReport(
        lift=pd.DataFrame(lift_rows),
        means=pd.DataFrame(mean_rows),
        srm=srm,
        breakdowns={b: pd.DataFrame(r) for b, r in bd_rows.items()},
        daily=daily,
        title=title,
        notes=notes,
    )


# ------------------------------------------------------------------------------ rendering


def _fmt(v: float, metric: str, rel: bool = False) -> str:
    if v != v:  # nan
        return "-"
    if rel:
        return f"{v:+.1%}"
    if "rate" in metric:
        return f"{v:.3%}" if abs(v) < 0.1 else f"{v:.2%}"
    return f"{v:,.3f}"


def _lift_display(lift: pd.DataFrame, extra: str | None = None) -> pd.DataFrame:
    rows = []
    for _, r in lift.iterrows():
        m = str(r["metric"])
        row = {
            "experiment": r["experiment"],
            "arm": r["arm"],
            **({extra: r[extra]} if extra else {}),
            "metric": m,
            "n arm": f"{int(r['n_arm']):,}",
            "n hold": f"{int(r['n_holdout']):,}",
            "arm mean": _fmt(r["arm_mean"], m),
            "holdout": _fmt(r["holdout_mean"], m),
            "abs lift [95% CI]": f"{_fmt(r['abs_lift'], m)} [{_fmt(r['abs_low'], m)}, "
            f"{_fmt(r['abs_high'], m)}]",
            "rel lift [95% CI]": f"{_fmt(r['rel_lift'], m, True)} "
            f"[{_fmt(r['rel_low'], m, True)}, {_fmt(r['rel_high'], m, True)}]",
            "p": f"{r['p_value']:.2g}" if r["p_value"] == r["p_value"] else "-",
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _srm_lines(s: SRMResult) -> list[str]:
    parts = ", ".join(
        f"{a}: {s.observed.get(a, 0):,} (exp {sh:.1%})" for a, sh in s.expected_share.items()
    )
    head = f"SRM {s.experiment}: chi2={s.chi2:.2f} p={s.p_value:.3g}  [{parts}]"
    if not s.mismatch:
        return [head + "  ok"]
    bar = "!" * 78
    why = []
    if s.p_value < SRM_ALPHA:
        why.append(f"allocation counts deviate from configured shares (p < {SRM_ALPHA})")
    if s.unknown_arms:
        why.append(f"arms not in the configuration: {s.unknown_arms}")
    return [
        bar,
        f"!! SAMPLE RATIO MISMATCH in experiment {s.experiment!r}: " + "; ".join(why),
        "!! Lift figures for this experiment are NOT trustworthy until this is explained.",
        "!! " + head,
        bar,
    ]


def render_text(rep: LiftReport, max_breakdown_rows: int = 20) -> str:
    out = [rep.title, "=" * len(rep.title), ""]
    for s in rep.srm:
        out += _srm_lines(s)
    out += [f"note: {n}" for n in rep.notes]
    if rep.lift.empty:
        out.append("\n(no arm vs holdout comparisons)")
    else:
        out += ["", "Lift vs holdout (Welch CI for differences, delta method for relative)"]
        out.append(_lift_display(rep.lift).to_string(index=False))
    for b, t in rep.breakdowns.items():
        if t.empty:
            continue
        t = t.sort_values(
            ["experiment", "arm", "metric", "n_arm"], ascending=[True, True, True, False]
        )
        out += ["", f"By {b} (treated action; segments with >= 30 decisions per side)"]
        out.append(_lift_display(t.head(max_breakdown_rows * 2), b).to_string(index=False))
    return "\n".join(out)


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.find("<svg") :]


def forest_figure(lift: pd.DataFrame) -> Any:
    """Relative lift of every arm over the holdout with its 95 % interval, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(lift["metric"]))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.2 * len(metrics), 0.5 * len(lift) / len(metrics) + 1.6)
    )
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, metrics, strict=True):
        t = lift[lift["metric"] == m].reset_index(drop=True)
        y = np.arange(len(t))[::-1]
        rel = t["rel_lift"].to_numpy(dtype=float) * 100
        lo = t["rel_low"].to_numpy(dtype=float) * 100
        hi = t["rel_high"].to_numpy(dtype=float) * 100
        ax.errorbar(
            rel, y, xerr=[rel - lo, hi - rel], fmt="o", capsize=4, color="#1f5fa8", ecolor="#777"
        )
        ax.axvline(0, color="#c33", lw=1)
        ax.set_yticks(y, [f"{e} / {a}" for e, a in zip(t["experiment"], t["arm"], strict=True)])
        ax.set_title(m)
        ax.set_xlabel("relative lift vs holdout, % (95% CI)")
    fig.tight_layout()
    return fig


def _forest_svg(lift: pd.DataFrame) -> str:
    return _svg(forest_figure(lift))


def write_forest_png(lift: pd.DataFrame, path: str | Path) -> Path:
    """The forest plot as a PNG file (``--figure``: docs/figures/ is written this way)."""
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = forest_figure(lift)
    fig.savefig(out, dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return out


def _daily_svg(daily: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exps = list(dict.fromkeys(daily["experiment"]))
    fig, axes = plt.subplots(len(exps), 1, figsize=(8, 2.8 * len(exps)), squeeze=False)
    for ax, e in zip(axes[:, 0], exps, strict=True):
        for arm, g in daily[daily["experiment"] == e].groupby("arm"):
            ax.plot(g["day"], g["conversion rate"] * 100, marker=".", label=str(arm))
        ax.set_title(f"{e}: conversion rate by day and arm")
        ax.set_ylabel("%")
        ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _svg(fig)


def render_html(rep: LiftReport) -> str:
    """A self-contained HTML page (inline SVG plots, no external assets)."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(rep.title)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "th{background:#eee}.srm{background:#fdd;border:3px solid #c00;padding:1em;"
        "font-weight:bold}.ok{color:#070}",
        "</style></head><body>",
        f"<h1>{esc(rep.title)}</h1>",
        "<p>Absolute lift: Welch t interval. Relative lift: delta method on the log ratio of "
        "means. SRM: chi-square of distinct units per arm against configured shares "
        f"(flagged at p &lt; {SRM_ALPHA}).</p>",
    ]
    for s in rep.srm:
        lines = _srm_lines(s)
        if s.mismatch:
            parts.append("<div class='srm'>" + "<br>".join(esc(x.strip("! ")) for x in lines[1:-1]))
            parts.append("</div>")
        else:
            parts.append(f"<p class='ok'>{esc(lines[0])}</p>")
    for n in rep.notes:
        parts.append(f"<p>note: {esc(n)}</p>")
    if not rep.lift.empty:
        parts.append("<h2>Lift vs holdout</h2>")
        parts.append(_lift_display(rep.lift).to_html(index=False))
        parts.append(_forest_svg(rep.lift))
    if not rep.means.empty:
        parts.append("<h2>Means by arm</h2>")
        parts.append(rep.means.to_html(index=False, float_format=lambda v: f"{v:.5g}"))
    if not rep.daily.empty:
        parts.append("<h2>Conversion over time</h2>")
        parts.append(_daily_svg(rep.daily))
    for b, t in rep.breakdowns.items():
        if t.empty:
            continue
        parts.append(f"<h2>By {esc(b)} (treated action)</h2>")
        parts.append(_lift_display(t, b).to_html(index=False))
    parts.append("</body></html>")
    return "\n".join(parts)


def png_base64(fig: Any) -> str:
    """A figure as a data URI (for callers who prefer PNG)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
