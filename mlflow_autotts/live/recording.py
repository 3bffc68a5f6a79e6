"""Live episodes recorded as replay trajectories.

A recorded branch ``j`` is the branch opened ``j``-th (or generated ahead for that
position), so replaying with the identity order opens the same branches in the same order.
Its fields are chosen so that the replay rules (``replay/episode.py``) give back what the
live episode gave, step for step and token for token:

- ``probe_answers``: the probe answers of its non-final intervals, as far as they were
  probed without a gap. Every step the controller took on it was probed, so the replay
  reveals the same answers with ``finished=False`` for those steps.
- ``branch_tokens``: the tokens generated for it, consumed or not.
- ``final_answer``: its final answer when it finished (EOS or the token limit). Then the
  replay's finishing step costs ``length - interval * probes``, exactly the live step's
  tokens, and reading it whole costs its length, as live.

A branch left **unfinished** (the controller stopped before its end) is recorded with all
its probed intervals as probes, so every step the controller took replays as unfinished and
bills ``interval`` tokens; its final answer is ``"ERR"`` and its length the tokens
generated. The replay format has no "unfinished" flag: a replay that pushed such a branch
past its recorded probes would see it end there with ``"ERR"``. So the provenance lists
these branches (``sampling["unfinished"]``: problem index → branch indices), and the
finished branches whose later probes were never taken (``sampling["probes_missing"]``, e.g.
branches read whole without ``probe_reads``): a collection or a search on a recording can
drop or flag them. Signals, when the episode had them, are stored per recorded probe.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from mlflow_autotts.controllers.base import CONFIDENCE, GROUP_CONFIDENCE
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
from mlflow_autotts.live.answers import NO_ANSWER
from mlflow_autotts.live.episode import LiveEpisode


def record_branches(episode: LiveEpisode) -> tuple[Branches, list[int], list[int]]:
    """The episode's branches in replay form, with the indices of unfinished branches and of
    finished branches whose probes stop before their end."""
    interval = episode.interval_tokens
    probes: list[list[str]] = []
    tokens: list[int] = []
    finals: list[str] = []
    names = (CONFIDENCE, GROUP_CONFIDENCE) if episode.config.top_logprobs else ()
    signals: dict[str, list[list[float]]] = {name: [] for name in names}
    unfinished: list[int] = []
    missing: list[int] = []
    for j, b in enumerate(episode.branches):
        p = b.probed_prefix()
        probes.append([b.probes[k] for k in range(1, p + 1)])
        tokens.append(len(b.ids))
        if b.finished:
            finals.append(b.final if b.final is not None else NO_ANSWER)
            if p < b.nonfinal(interval):
                missing.append(j)
        else:
            finals.append(NO_ANSWER)
            unfinished.append(j)
        per = [episode.interval_signals(b, k) for k in range(1, p + 1)] if names else []
        for name, rows in signals.items():
            rows.append([d[name] for d in per])
    branches = Branches.from_lists(episode.question, interval, probes, tokens, finals, signals or None)
    return branches, unfinished, missing


def record_episode(episode: LiveEpisode, gold_answer: str = "") -> Problem:
    """One live episode as a replay problem (``gold_answer`` is not known to the episode)."""
    return Problem(record_branches(episode)[0], gold_answer)


def record_set(episodes: Iterable[tuple[LiveEpisode, str]], benchmark: str = "live") -> TrajectorySet:
    """Live episodes (each with its gold answer, or ``""``) as one trajectory set.

    The provenance names the model and the settings; ``sampling["unfinished"]`` and
    ``sampling["probes_missing"]`` list, per problem index, the branches described above.
    """
    problems: list[Problem] = []
    unfinished: dict[str, list[int]] = {}
    missing: dict[str, list[int]] = {}
    config = None
    for p, (ep, gold) in enumerate(episodes):
        branches, unf, miss = record_branches(ep)
        problems.append(Problem(branches, gold))
        if unf:
            unfinished[str(p)] = unf
        if miss:
            missing[str(p)] = miss
        config = config or ep.config
    sampling = config.sampling() if config else {}
    sampling.update(unfinished=unfinished, probes_missing=missing)
    model = Path(config.model).name if config else ""
    source = f"live:{config.backend}:{config.base_url or config.model}" if config else "live"
    return TrajectorySet(problems, Provenance(model=model, benchmark=benchmark, source=source, sampling=sampling))


def replay_order(episode: LiveEpisode) -> Sequence[int]:
    """The branch order that replays a recording of ``episode`` as it ran: the identity."""
    return tuple(range(len(episode.branches)))


__all__ = ["record_branches", "record_episode", "record_set", "replay_order"]
