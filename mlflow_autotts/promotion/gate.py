"""The promotion gate: its rule, the replay of both versions, the decision and the report.

The gate replays the candidate and the incumbent (the version holding the target alias,
if any) on the same data in one process pool and passes when the candidate keeps
accuracy (within ``max_accuracy_drop`` points) and spends no more than
``max_token_ratio`` times the incumbent's tokens. The texts that say why are made here too,
so the registry adapter (``tracking.model_registry``) only reads versions and writes results:
a few short, rounded ``autotts.gate.*`` tags (the registry lists a version's tags in one
narrow column), the full report as the candidate's description (a markdown table of both
versions, the rule, the decision, a link to the gate's run and its plot) and the
side-by-side table the command line prints.

To add a rule: declare its setting on ``GateConfig`` (bounded where it has a range, with
a field docstring), add its condition and sentence to ``decide``, and name it in
``GateConfig.rule``; tags and description carry the rule and reason as they are.

No MLflow here (import-linter's "core runs without MLflow" contract).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

from mlflow_autotts import settings
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.trajectory import TrajectorySet
from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.evaluation import score_specs
from mlflow_autotts.replay.results import EvalResult, mean_over_datasets
from mlflow_autotts.replay.runner import ReplayConfig
from mlflow_autotts.sandbox.limits import SandboxLimits

GATE_TAG = "autotts.gate"
"""Prefix of the tags a gate leaves on both versions."""
_EPS = 1e-9  # float slack so that equal numbers never fail a gate by rounding


# ------------------------------------------------------------------------- rule
def _option_error(name: str, why: str) -> AutoTTSError:
    """A bound broken, named as the ``autotts promote`` option that sets it."""
    return AutoTTSError(f"--{name.replace('_', '-')} {why}")


@dataclass(frozen=True)
class GateConfig:
    """The promotion rule and how to replay for it."""

    max_accuracy_drop: float = 0.0
    """Points of mean accuracy (%) the candidate may lose against the incumbent."""
    max_token_ratio: float = settings.bounded(1.0, gt=0)
    """Largest allowed ratio of candidate to incumbent mean tokens."""
    shuffles: int = settings.bounded(100, ge=1)
    """Replay runs per dataset."""
    workers: int | None = settings.bounded(None, ge=1)
    """Worker processes (None: all cores)."""
    progress: bool = True
    """Show a progress bar."""
    allow_weaker_isolation: bool = False
    """Run controller code that is not built in even where the sandbox cannot give its full
    isolation here (e.g. not root, no network namespace); the weaker isolation is recorded."""

    def __post_init__(self) -> None:
        # bounds compare numbers; an infinite limit would pass every candidate, so say so first
        if not math.isfinite(self.max_accuracy_drop):
            raise AutoTTSError(f"--max-accuracy-drop must be a finite number, got {self.max_accuracy_drop}")
        if not math.isfinite(self.max_token_ratio):
            raise AutoTTSError(f"--max-token-ratio must be a positive number, got {self.max_token_ratio}")
        settings.check_bounds(self, bad=_option_error)

    @property
    def rule(self) -> str:
        return (f"accuracy >= incumbent - {self.max_accuracy_drop:g} points and "
                f"tokens <= {self.max_token_ratio:g} x incumbent")


# ------------------------------------------------------------------------ replay
@dataclass(frozen=True)
class GateEntry:
    """A registered version entering the gate: what the registry says about it."""

    version: str
    """Its version number (a string, as MLflow gives it)."""
    alias: str
    """The alias it was found under."""
    spec: ControllerSpec
    """The controller it holds (replayed in the sandbox unless built in)."""


@dataclass
class GateSide:
    """One version's replay results on the gate data (one ``EvalResult`` per dataset)."""

    name: str
    version: str
    alias: str
    controller: str
    results: list[EvalResult]

    @property
    def accuracy(self) -> float:
        """Mean over datasets of accuracy (%)."""
        return mean_over_datasets(self.results)[0]

    @property
    def mean_tokens(self) -> float:
        """Mean over datasets of mean tokens per problem."""
        return mean_over_datasets(self.results)[1]

    @property
    def label(self) -> str:
        return f"v{self.version} ({self.controller})"


def load_gate_data(data: Sequence[Any]) -> list[TrajectorySet]:
    """The gate's datasets: given loaded, or loaded from their URIs."""
    if all(isinstance(d, TrajectorySet) for d in data):
        return list(data)
    return load_datasets([str(d) for d in data])


def replay_sides(name: str, candidate: GateEntry, incumbent: GateEntry | None, datasets: list[TrajectorySet],
                 config: GateConfig) -> tuple[GateSide, GateSide | None]:
    """Both versions replayed on ``datasets`` in one pool; an incumbent that is the candidate's
    own version is replayed once and both sides are the candidate's."""
    same = incumbent is not None and incumbent.version == candidate.version
    specs = [candidate.spec] + ([incumbent.spec] if incumbent is not None and not same else [])
    # versions from a search are untrusted code: score_specs replays them in the sandbox
    results = score_specs(specs, datasets, ReplayConfig(shuffles=config.shuffles, workers=config.workers,
                                                      progress=config.progress), keep_episodes=False,
                          limits=SandboxLimits(allow_weaker_isolation=config.allow_weaker_isolation))
    n = len(datasets)
    cand = GateSide(name, candidate.version, candidate.alias, specs[0].label, results[:n])
    if incumbent is None:
        return cand, None
    return cand, cand if same else GateSide(name, incumbent.version, incumbent.alias, specs[1].label, results[n:])


# ---------------------------------------------------------------------- decision
@dataclass
class GateDecision:
    """What the gate found and did."""

    passed: bool
    reason: str
    candidate: GateSide
    incumbent: GateSide | None
    target_alias: str
    config: GateConfig
    datasets: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    """Content digests of the gate data (``data/digest.py``, as the runs' dataset inputs show them)."""
    trajectories: list[TrajectorySet] = field(default_factory=list, repr=False)
    """The gate data itself, for the gate run's dataset inputs (empty when not kept)."""


def decide(candidate: GateSide, incumbent: GateSide | None, config: GateConfig) -> tuple[bool, str]:
    """The rule, with the numbers that decided it."""
    if incumbent is None:
        return True, (f"no incumbent: first promotion (accuracy {candidate.accuracy:.2f}%, "
                      f"{candidate.mean_tokens:,.0f} tokens)")
    floor = incumbent.accuracy - config.max_accuracy_drop
    ceiling = config.max_token_ratio * incumbent.mean_tokens
    acc_ok = candidate.accuracy >= floor - _EPS
    tok_ok = candidate.mean_tokens <= ceiling * (1 + _EPS)
    acc_txt = (f"accuracy {candidate.accuracy:.2f}% {'>=' if acc_ok else '<'} {floor:.2f}% "
               f"(incumbent {incumbent.accuracy:.2f}% - {config.max_accuracy_drop:g})")
    tok_txt = (f"tokens {candidate.mean_tokens:,.0f} {'<=' if tok_ok else '>'} {ceiling:,.0f} "
               f"({config.max_token_ratio:g} x incumbent {incumbent.mean_tokens:,.0f})")
    if acc_ok and tok_ok:
        return True, f"{acc_txt}; {tok_txt}"
    return False, "; ".join(t for ok, t in ((acc_ok, acc_txt), (tok_ok, tok_txt)) if not ok)


def judge(candidate: GateSide, incumbent: GateSide | None, target_alias: str, config: GateConfig,
          datasets: Sequence[str] = (), digests: Sequence[str] = (),
          trajectories: Sequence[TrajectorySet] = ()) -> GateDecision:
    """The decision on two replayed sides, with what it was decided on."""
    passed, reason = decide(candidate, incumbent, config)
    return GateDecision(passed, reason, candidate, incumbent, target_alias, config, list(datasets), list(digests),
                        list(trajectories))


def gate(name: str, candidate: GateEntry, incumbent: GateEntry | None, target_alias: str,
         datasets: list[TrajectorySet], config: GateConfig, digests: Sequence[str] = ()) -> GateDecision:
    """Replay both versions on ``datasets`` and decide whether ``candidate`` takes ``target_alias``
    (``digests``: the data's content digests as the caller records lineage)."""
    cand, inc = replay_sides(name, candidate, incumbent, datasets, config)
    return judge(cand, inc, target_alias, config, [d.name for d in datasets], digests, datasets)


# ------------------------------------------------------------------------ report
REPORT_END = "<!-- end of the autotts gate's report -->"
"""Where the gate's report ends in a version's description (MLflow's UI does not show it):
what follows is the description the version had before (its registration's), kept when
the report is written again."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def accuracy_text(x: float) -> str:
    return f"{x:.2f}%"


def tokens_text(x: float) -> str:
    return f"{x:,.0f}"


def gain_text(side: GateSide, other: GateSide | None) -> str:
    """``+1.25 pts, 0.88x tokens vs v1``: ``side`` against the other version of its gate."""
    if other is None or other is side:
        return "first promotion"
    ratio = f"{side.mean_tokens / other.mean_tokens:.2f}x" if other.mean_tokens else "n/a"
    return f"{side.accuracy - other.accuracy:+.2f} pts, {ratio} tokens vs v{other.version}"


def gate_tags(side: GateSide, other: GateSide | None, decision: GateDecision, role: str) -> dict[str, str]:
    """The ``autotts.gate.*`` tags of a version after a gate: four short, rounded values (the
    full numbers are the gate run's metrics and the description's table). ``role`` is
    ``candidate`` (decision: promoted or refused) or ``incumbent`` (kept or replaced)."""
    if role == "candidate":
        verdict = "promoted" if decision.passed else "refused"
    elif role == "incumbent":
        verdict = "replaced" if decision.passed else "kept"
    else:
        raise ValueError(f"role must be candidate or incumbent, got {role!r}")
    return {
        f"{GATE_TAG}.decision": verdict,
        f"{GATE_TAG}.accuracy": accuracy_text(side.accuracy),
        f"{GATE_TAG}.tokens": tokens_text(side.mean_tokens),
        f"{GATE_TAG}.gain": gain_text(side, other),
    }


def _rows(decision: GateDecision) -> tuple[list[str], list[tuple[float, float]], list[tuple[float, float]]]:
    """(row names, candidate's (accuracy, tokens) per row, incumbent's or none): each dataset, then the mean."""
    c, i = decision.candidate, decision.incumbent
    names = [r.data for r in c.results] + ["mean"]
    c_vals = [(r.accuracy, r.mean_tokens) for r in c.results] + [(c.accuracy, c.mean_tokens)]
    i_vals = ([(r.accuracy, r.mean_tokens) for r in i.results] + [(i.accuracy, i.mean_tokens)]) if i else []
    return names, c_vals, i_vals


def gate_table(decision: GateDecision) -> str:
    """Side by side, per dataset and the mean: accuracy and tokens of both versions."""
    c, i = decision.candidate, decision.incumbent
    head = ["data", f"candidate {c.label} acc %", "tokens"]
    if i is not None:
        head += [f"incumbent {i.label} acc %", "tokens", "Δacc", "token ratio"]
    rows = []
    names, c_vals, i_vals = _rows(decision)
    for k, name in enumerate(names):
        row = [name, f"{c_vals[k][0]:.2f}", f"{c_vals[k][1]:,.0f}"]
        if i is not None:
            ia, it = i_vals[k]
            ratio = c_vals[k][1] / it if it else float("inf")
            row += [f"{ia:.2f}", f"{it:,.0f}", f"{c_vals[k][0] - ia:+.2f}", f"{ratio:.3f}"]
        rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(h.ljust(w) if n == 0 else h.rjust(w) for n, (h, w) in enumerate(zip(head, widths))),
             "  ".join("-" * w for w in widths)]
    for row in rows:
        lines.append("  ".join(x.ljust(w) if n == 0 else x.rjust(w) for n, (x, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text as one markdown table cell (a ``|`` would end it)."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(decision: GateDecision) -> str:
    """``gate_table`` as a markdown table: a row per dataset and the mean (in bold), the
    candidate's and the incumbent's accuracy and tokens, the accuracy change and token ratio."""
    c, i = decision.candidate, decision.incumbent
    head = ["data", f"candidate v{c.version} accuracy", "tokens"]
    align = ["---", "--:", "--:"]
    if i is not None:
        head += [f"incumbent v{i.version} accuracy", "tokens", "Δ accuracy", "token ratio"]
        align += ["--:"] * 4
    lines = ["| " + " | ".join(map(_cell, head)) + " |", "|" + "|".join(align) + "|"]
    names, c_vals, i_vals = _rows(decision)
    for k, name in enumerate(names):
        row = [f"**{name}**" if k == len(names) - 1 else _cell(name), accuracy_text(c_vals[k][0]),
               tokens_text(c_vals[k][1])]
        if i is not None:
            ia, it = i_vals[k]
            row += [accuracy_text(ia), tokens_text(it), f"{c_vals[k][0] - ia:+.2f} pts",
                    f"{c_vals[k][1] / it:.3f}" if it else "n/a"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def headline(decision: GateDecision) -> str:
    """What happened, in a line: promoted (replacing whom) or refused (the alias stays where).
    The alias is code: MLflow's UI renders markdown GitHub's way, where ``@name`` links to a user."""
    c, i, alias = decision.candidate, decision.incumbent, f"`@{decision.target_alias}`"
    if decision.passed:
        replaced = f", replacing v{i.version}" if i is not None and i.version != c.version else ""
        return f"Gate: v{c.version} promoted to {alias}{replaced}"
    stays = f"{alias} stays on v{i.version}" if i is not None else f"{alias} stays unset"
    return f"Gate: v{c.version} refused; {stays}"


def report(decision: GateDecision, run: tuple[str, str] | None = None, plot: str | None = None,
           when: str | None = None) -> str:
    """The gate's full report as markdown, for the candidate's description: what happened, the
    table of both versions, the rule, why, the data, and ``run`` (its name and link: the gate's
    MLflow run with every number as a metric) with its ``plot`` (an image URL) shown below."""
    c, i = decision.candidate, decision.incumbent
    data = ", ".join(f"{name} (`{digest}`)" if digest else name
                     for name, digest in zip(decision.datasets, decision.digests or [""] * len(decision.datasets)))
    versions = f"v{c.version} `{c.controller}`" + (f" against v{i.version} `{i.controller}`"
                                                   if i is not None and i is not c else "")
    lines = [f"### {headline(decision)}", "", markdown_table(decision), "",
             f"- **Versions:** {versions}",
             f"- **Rule:** {decision.config.rule}",
             f"- **Decision:** {decision.reason}",
             f"- **Data:** {data or 'none'}; {decision.config.shuffles} shuffles"]
    if run is not None:
        lines.append(f"- **Gate run:** [{run[0]}]({run[1]}): every number as a metric, the data as inputs, "
                     "the plot below")
    lines.append(f"- **Decided:** {when or _now()} by the autotts gate")
    if plot is not None:
        lines += ["", f"![accuracy against tokens, both versions, with the rule's limits]({plot})"]
    return "\n".join(lines) + "\n"


def description(decision: GateDecision, previous: str | None = None, run: tuple[str, str] | None = None,
                plot: str | None = None, when: str | None = None) -> str:
    """The candidate's new description: the gate's ``report``, then what the description said
    before (its registration's words, without an earlier gate's report)."""
    rest = (previous or "").split(REPORT_END, 1)[-1].strip()
    rest = rest.removeprefix("---").strip()
    text = report(decision, run, plot, when) + f"\n{REPORT_END}\n"
    return text + (f"\n---\n\n{rest}\n" if rest else "")
