"""Accuracy-against-tokens figures: a controller's curve across β with reference points.

The drawing function takes plain curves and points, so the search can reuse it for its
Pareto front (front as a curve, candidates as points). Figures are built with
``matplotlib.figure.Figure`` directly, not pyplot: no global backend or figure registry is
touched, so this is safe in servers and worker processes, and Agg renders the PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from mlflow_autotts.controllers.reference import sc_label

if TYPE_CHECKING:  # matplotlib is imported lazily: it costs ~0.5 s
    from matplotlib.figure import Figure

    from mlflow_autotts.promotion.gate import GateDecision
    from mlflow_autotts.replay.report import EvaluationReport
    from mlflow_autotts.replay.results import EvalResult

_MARKERS = ("s", "^", "D", "v", "P", "X", "*", "p", "h", "<", ">")


@dataclass(frozen=True)
class Curve:
    """One line of (tokens, accuracy) points, e.g. a controller across β on one dataset."""

    label: str
    """Legend entry."""
    points: Sequence[tuple[float, float]]
    """(mean tokens, accuracy %) pairs, drawn in the given order."""
    group: str = ""
    """Colour key: curves and points of the same group share a colour (e.g. the dataset)."""
    point_labels: Sequence[str] = field(default_factory=tuple)
    """Optional text next to each point (e.g. its β); empty for none."""


@dataclass(frozen=True)
class Point:
    """One labelled point, e.g. a reference controller on one dataset."""

    label: str
    """Text written next to the point."""
    tokens: float
    """Mean tokens per problem (x)."""
    accuracy: float
    """Accuracy in percent (y)."""
    group: str = ""
    """Colour key, shared with curves of the same group."""
    kind: str = ""
    """Marker-shape key with a legend entry (e.g. the controller name); empty: a circle."""


def tradeoff_figure(
    curves: Sequence[Curve],
    points: Sequence[Point] = (),
    *,
    title: str = "",
    xlabel: str = "mean tokens per problem",
    ylabel: str = "accuracy (%)",
    log_x: bool = True,
    label_points: bool = True,
) -> "Figure":
    """Curves and points on accuracy-against-tokens axes; log x when every x is positive.

    ``label_points=False`` leaves the points' text out (their ``kind`` is still in the
    legend): clusters of references stay readable.
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    groups = list(dict.fromkeys([c.group for c in curves] + [p.group for p in points]))
    palette = matplotlib.colormaps["tab10"]
    colour = {g: palette(i % 10) for i, g in enumerate(groups)}
    kinds = list(dict.fromkeys(p.kind for p in points if p.kind))
    marker = {k: _MARKERS[i % len(_MARKERS)] for i, k in enumerate(kinds)}

    fig = Figure(figsize=(9.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    handles = []
    for c in curves:
        if not c.points:
            continue
        xs, ys = zip(*c.points)
        (line,) = ax.plot(xs, ys, "-o", color=colour[c.group], markersize=4, linewidth=1.6, label=c.label)
        handles.append(line)
        for (x, y), text in zip(c.points, c.point_labels):
            ax.annotate(text, (x, y), xytext=(4, -9), textcoords="offset points", fontsize=7, color="0.3")
    for p in points:
        ax.scatter([p.tokens], [p.accuracy], marker=marker.get(p.kind, "o"), s=46, color=colour[p.group],
                   edgecolors="black", linewidths=0.6, zorder=3)
        if label_points:
            ax.annotate(p.label, (p.tokens, p.accuracy), xytext=(5, 4), textcoords="offset points",
                        fontsize=7, color=colour[p.group])
    for k in kinds:
        handles.append(Line2D([], [], linestyle="none", marker=marker[k], markersize=7, color="0.75",
                              markeredgecolor="black", label=k))
    xs_all = [x for c in curves for x, _ in c.points] + [p.tokens for p in points]
    if log_x and xs_all and min(xs_all) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return fig


def result_label(result: "EvalResult") -> str:
    """A short display name: ``sc@64`` for SC with its N, ``cmc β=0.5`` when β matters."""
    label = result.controller
    if label == "sc" and "n" in result.params:
        label = f"sc@{result.params['n']}"
    if result.beta is not None:
        label += f" β={result.beta:g}"
    return label


def accuracy_tokens_figure(report: "EvaluationReport") -> "Figure":
    """The evaluated controller across β, one line per dataset, with SC@N (N: the branches
    the dataset has, at most 64) and the other reference controllers as points in that
    dataset's colour."""
    curves = []
    for data in report.datasets:
        rs = [r for r in report.results if r.data == data]
        rs.sort(key=lambda r: (r.beta is not None, r.beta or 0.0))
        curves.append(Curve(
            label=data, group=data, points=[(r.mean_tokens, r.accuracy) for r in rs],
            point_labels=[f"β={r.beta:g}" if r.beta is not None else "" for r in rs]))
    sets = {ts.name: ts for ts in report.trajectories}
    labelled = [(sc_label([sets[r.data]]) if r.data in sets else result_label(r), r) for r in report.sc64.values()]
    labelled += [(result_label(r), r) for r in report.references]
    points = [Point(label=label, tokens=r.mean_tokens, accuracy=r.accuracy, group=r.data, kind=label)
              for label, r in labelled]
    controllers = ", ".join(dict.fromkeys(r.controller for r in report.results))
    # the legend names each reference's marker shape; text beside every point would overlap
    return tradeoff_figure(curves, points, label_points=False,
                           title=f"{controllers} across β (lines) and reference controllers (points)")


def gate_figure(decision: "GateDecision") -> "Figure":
    """The gate on accuracy-against-tokens axes: each version on each dataset (colour and text:
    the dataset, shape: the version) and their means, with the rule's limits drawn from the
    incumbent's mean (the candidate's mean must lie above the floor and left of the ceiling)."""
    c, i = decision.candidate, decision.incumbent
    sides = [(f"candidate v{c.version} ({c.controller})", c)]
    if i is not None and i is not c:
        sides.append((f"incumbent v{i.version} ({i.controller})", i))
    points = [Point(r.data, r.mean_tokens, r.accuracy, group=r.data, kind=label)
              for label, side in sides for r in side.results]
    if len(c.results) > 1:
        points += [Point("mean", side.mean_tokens, side.accuracy, group="mean", kind=label) for label, side in sides]
    verdict = "promoted" if decision.passed else "refused"
    fig = tradeoff_figure([], points, title=f"gate for @{decision.target_alias}: v{c.version} {verdict}\n"
                                            f"rule: {decision.config.rule}")
    fig.axes[0].title.set_fontsize("medium")
    if i is not None and i is not c:
        ax = fig.axes[0]
        floor = i.accuracy - decision.config.max_accuracy_drop
        ceiling = decision.config.max_token_ratio * i.mean_tokens
        xs = [p.tokens for p in points if p.tokens > 0] + [ceiling]
        if ceiling > 0 and ax.get_xscale() == "log":
            ax.set_xlim(min(xs) / 1.2, max(xs) * 1.2)
        ax.axhline(floor, color="tab:red", linestyle="--", linewidth=1,
                   label=f"floor of the mean accuracy {floor:.2f}%")
        ax.axvline(ceiling, color="tab:red", linestyle=":", linewidth=1,
                   label=f"ceiling of the mean tokens {ceiling:,.0f}")
        handles = ax.get_legend().legend_handles if ax.get_legend() else []
        ax.legend(handles=[*handles, *ax.get_lines()[-2:]], loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize="small", frameon=False)
    return fig


def progress_figure(steps: Sequence[int], values: Sequence[float], *, ylabel: str, title: str = "",
                    baseline: tuple[float, str] | None = None, marks: Sequence[tuple[float, str]] = ()) -> "Figure":
    """A search's best-so-far value against candidates scored; ``baseline`` (value, label)
    draws a horizontal reference (e.g. CMC's own curve at gain 0), ``marks`` (step, label)
    vertical lines (e.g. where the seeds end)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    if steps:
        ax.step(list(steps), list(values), where="post", color="tab:blue", label="best so far")
        ax.plot(list(steps), list(values), "o", color="tab:blue", markersize=3)
    if baseline is not None:
        ax.axhline(baseline[0], color="0.4", linestyle="--", linewidth=1, label=baseline[1])
    for step, label in marks:
        ax.axvline(step, color="tab:orange", linestyle=":", linewidth=1.2, label=label)
    ax.set_xlabel("candidates scored")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize="medium")
    if baseline is not None or marks:
        ax.legend(loc="lower right", fontsize="small")
    ax.grid(True, alpha=0.35)
    return fig
