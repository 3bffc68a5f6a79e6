"""The vocabulary shared by explorers, the sandbox, the archive and the search loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from mlflow_autotts.replay.results import EvalResult, by_beta, mean_over_datasets


@dataclass(frozen=True)
class Usage:
    """What a proposal cost the explorer (zero for offline explorers)."""

    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0


@dataclass(frozen=True)
class Proposal:
    """One candidate controller as an explorer wrote it, before any checking."""

    source: str
    """Complete Python source defining one Controller subclass."""
    class_name: str | None = None
    """The class to use; None means the only Controller subclass in ``source``."""
    parents: tuple[str, ...] = ()
    """Candidate ids this proposal was derived from."""
    explorer: str = ""
    """Explorer that wrote it, e.g. ``evolve`` or ``openai:gpt-4.1``."""
    generation: int = 0
    """Search generation (round) it was proposed in."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Explorer-specific data (e.g. the genome, the prompt id), JSON-serialisable."""
    usage: Usage = Usage()


@dataclass
class Candidate:
    """A proposal with what the search learnt about it."""

    id: str
    proposal: Proposal
    scores: list[EvalResult] = field(default_factory=list)
    """Replay results per (dataset, β) on the search split (without episodes)."""
    failure: str | None = None
    """``kind: message`` when checking or scoring failed; scores are then empty."""
    feedback: str = ""
    """A compact account of where it loses (wrong questions, costly episodes), for LLM explorers."""

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.scores)

    def curve(self) -> list[tuple[float, float, float]]:
        """(β, mean accuracy over datasets, mean tokens over datasets), by β."""
        return [(b, *mean_over_datasets(rs)) for b, rs in by_beta(self.scores).items()]


class Explorer(Protocol):
    """Writes candidate controllers; sees the archive of scored candidates (search split only)."""

    name: str

    def propose(self, archive: Sequence[Candidate], n: int, generation: int) -> list[Proposal]:
        """Up to ``n`` new proposals, given every candidate scored so far."""
        ...
