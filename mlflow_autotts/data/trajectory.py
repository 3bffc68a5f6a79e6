"""In-memory trajectory sets, laid out for fast replay.

A problem's branches are stored as flat parallel arrays (one entry per branch, and one
flat list of probe answers with offsets) instead of one object per branch: the replay
loop then indexes plain lists, which is what makes 3,000 episodes run in well under a
second. The gold answer lives beside the branch data, never inside it, so an episode can
be handed the branches without the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence


@dataclass(frozen=True)
class Provenance:
    """Where a trajectory set came from; carried through Parquet and into MLflow params."""

    model: str = ""
    """Generating model, e.g. ``Qwen3-4B``."""
    benchmark: str = ""
    """Benchmark name, e.g. ``aime24``."""
    source: str = ""
    """URI or path the set was loaded from."""
    sampling: dict[str, Any] = field(default_factory=dict)
    """Sampling settings used at collection (temperature, top_p, max_tokens, …)."""

    @property
    def name(self) -> str:
        """``<model>/<benchmark>`` when both are known, else the source."""
        if self.model and self.benchmark:
            return f"{self.model}/{self.benchmark}"
        return self.source or "trajectories"


@dataclass(frozen=True, eq=False)
class Branches:
    """All sampled branches of one question, without its gold answer.

    Branch ``b`` has ``n_probes[b]`` probe answers at
    ``probe_answers[probe_offsets[b]:probe_offsets[b + 1]]``, a full length of
    ``branch_tokens[b]`` tokens and the final answer ``final_answers[b]``.
    """

    question: str
    interval_tokens: int
    probe_answers: list[str]
    probe_offsets: list[int]
    branch_tokens: list[int]
    final_answers: list[str]
    signals: dict[str, list[float]] = field(default_factory=dict)
    """Optional per-interval signals (e.g. ``confidence``), flat and aligned with
    ``probe_answers``."""
    n_probes: list[int] = field(init=False)

    def __post_init__(self) -> None:
        offs = self.probe_offsets
        object.__setattr__(self, "n_probes", [offs[i + 1] - offs[i] for i in range(len(offs) - 1)])

    @property
    def n_branches(self) -> int:
        return len(self.branch_tokens)

    def probes(self, b: int) -> list[str]:
        return self.probe_answers[self.probe_offsets[b] : self.probe_offsets[b + 1]]

    def branch_signals(self, b: int) -> dict[str, list[float]]:
        lo, hi = self.probe_offsets[b], self.probe_offsets[b + 1]
        return {k: v[lo:hi] for k, v in self.signals.items()}

    def triples(self) -> list[list[Any]]:
        """The published ``[probe_answers, branch_tokens, final_answer]`` form."""
        return [[self.probes(b), self.branch_tokens[b], self.final_answers[b]] for b in range(self.n_branches)]

    @classmethod
    def from_lists(
        cls,
        question: str,
        interval_tokens: int,
        probes: Sequence[Sequence[str]],
        branch_tokens: Sequence[int],
        final_answers: Sequence[str],
        signals: dict[str, Sequence[Sequence[float]]] | None = None,
    ) -> "Branches":
        flat: list[str] = []
        offsets = [0]
        for p in probes:
            flat.extend(p)
            offsets.append(len(flat))
        flat_signals = {k: [x for per in v for x in per] for k, v in (signals or {}).items()}
        return cls(question, int(interval_tokens), flat, offsets, list(branch_tokens), list(final_answers), flat_signals)


@dataclass(frozen=True, eq=False)
class Problem:
    """One question: its branches and, separately, its gold answer."""

    branches: Branches
    gold_answer: str

    @property
    def question(self) -> str:
        return self.branches.question


@dataclass(eq=False)
class TrajectorySet:
    """A benchmark's problems for one model, ready for replay."""

    problems: list[Problem]
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def name(self) -> str:
        return self.provenance.name

    def __len__(self) -> int:
        return len(self.problems)

    def subset(self, indices: Iterable[int], suffix: str = "") -> "TrajectorySet":
        """The problems at ``indices`` (e.g. a search or validation split)."""
        prov = self.provenance
        if suffix:
            prov = Provenance(prov.model, prov.benchmark + suffix if prov.benchmark else "", prov.source + suffix, dict(prov.sampling))
        return TrajectorySet([self.problems[i] for i in indices], prov)

    def signal_names(self) -> list[str]:
        names: set[str] = set()
        for p in self.problems:
            names.update(p.branches.signals)
        return sorted(names)
