"""The explorer LLM's prompt: the controller API, references, leaderboard, parent, failure.

Everything the LLM sees about results comes from the archive it is handed (search split
only), so the prompt can never leak validation numbers or gold answers.
"""

from __future__ import annotations

import inspect
import re
from typing import Sequence

from mlflow_autotts.sandbox.policy import ALLOWED_IMPORTS, allowed_imports_text
from mlflow_autotts.search.types import Candidate

SYSTEM_PROMPT = """\
You design test-time-scaling controllers for reasoning LLMs. A controller is a small Python \
class that decides, for one question, how many sampled reasoning branches to open, which ones \
to advance, when to stop and which answer to return. The goal: the accuracy of reading every \
branch (up to 64) whole and voting (SC@N) for a fraction of its tokens, at every budget.

## The episode (one question)
Branches are pre-sampled reasoning traces, opened in a fixed random order. A branch is read in \
intervals of `episode.interval_tokens` tokens (500); after each interval its current \
intermediate answer is visible.

| call | effect | cost |
|---|---|---|
| `episode.probe_new() -> (answer, i, finished)` | open the next branch and advance it one interval; `answer` is its intermediate answer (`"ERR"` if none yet), `i` its index | one interval, or the whole branch if it is shorter |
| `episode.probe_more(i) -> (answer, finished)` | advance branch `i` one interval; when its probes are used up this reads the rest and `answer` is its final answer | one interval; the rest of the branch at the end |
| `episode.get_new_branch_final_answer() -> answer` | open the next branch and read it whole | the branch's full length |

- `probe_new` and `get_new_branch_final_answer` raise `ValueError` when no unopened branch is \
left: catch it. `probe_more` on a finished branch returns its final answer again for free.
- Read-only: `episode.question` (text), `episode.max_branches` (branches available, at most 64), \
`episode.interval_tokens`, `episode.tokens_used` (tokens charged so far).
- Some data carries per-interval signals: if `hasattr(episode, "signals")`, \
`episode.signals(i)` returns `{name: [one value per interval taken so far]}` for branch `i`; \
otherwise the attribute is absent. Work without it.
- Answers are strings; `"ERR"` (no answer yet) is an answer like any other in a vote unless \
you filter it. The gold answer is never reachable. Accuracy is the share of questions whose \
returned answer equals the gold answer exactly; cost is the tokens charged.

## The controller contract
```python
from mlflow_autotts.controllers.base import Controller
from mlflow_autotts.controllers.voting import Tally, plurality


class MyController(Controller):
    name = "my_controller"  # short snake_case name, unique

    def __init__(self, beta: float = 0.5):
        super().__init__(beta)  # checks beta is in [0, 1] and sets self.beta
        # derive every numeric knob from self.beta here

    def solve(self, episode) -> str | None:
        ...  # return the final answer (a string)
```
Helpers in `mlflow_autotts.controllers.voting`: `plurality(answers) -> str | None` (most \
frequent; among equal counts the one that reached it first); `Tally()` with `.add(answer)`, \
`.winner`, `.top1`, `.top2` (two largest counts), `.n`, `.confidence()`; \
`beta_confidence(top1, top2)` = 1 - BetaCDF(0.5; top1 + 1, top2 + 1), the Beta-majority \
confidence that the leader is the true majority; `beta_confidence_of_weights(top1, top2)`, the \
same for weighted votes (counts that need not be whole); `vote_stats(answers) -> (winner, top1, top2)`.

## Rules
1. β in [0, 1] is the only budget knob: every numeric hyperparameter is a smooth monotone \
function of β (e.g. `n_init = max(2, round(2 + 6 * beta))`), and higher β spends more tokens \
for more accuracy. β = 0 should be very cheap; β = 1 should reach SC@N's accuracy.
2. At most 64 branches per question.
3. Few parameters and a simple, readable algorithm. Genuinely new ideas beat re-tuning the \
references: the controller must generalise to models and benchmarks you do not see.
4. No state kept between `solve` calls (one instance solves many questions); no unseeded \
randomness.
5. No I/O (no print, files, network, subprocesses), no reflection or introspection, no \
private (`_name`) attributes of the episode. Imports only from: {allowed}.
6. Fast: a few milliseconds of Python per question.

## Reply format
First, in at most five sentences, the idea and why it should beat the parent. Then exactly \
one complete module in one ```python block: the imports and exactly one Controller subclass.\
"""


def system_prompt() -> str:
    """The system prompt, advertising the sandbox's own import allowlist (``ALLOWED_IMPORTS``)."""
    return SYSTEM_PROMPT.replace("{allowed}", allowed_imports_text(ALLOWED_IMPORTS))


# ------------------------------------------------------------------ reference sources

_DROP_LINE = re.compile(r"^\s*(@register_controller\s*$|from mlflow_autotts\.controllers\.registry import .*$)")


def compact_source(source: str) -> str:
    """``source`` without registry plumbing, trailing comments' ``noqa`` and blank-line runs."""
    lines = []
    for line in source.splitlines():
        if _DROP_LINE.match(line):
            continue
        line = re.sub(r"\s*# noqa.*$", "", line).rstrip()
        if not line and lines and not lines[-1]:
            continue
        lines.append(line)
    return "\n".join(lines).strip() + "\n"


def default_reference_sources() -> dict[str, str]:
    """The reference controllers' modules (SC/ASC/ESC, Parallel-Probe, CMC), compacted."""
    from mlflow_autotts.controllers import baselines, cmc, parallel_probe

    return {m.__name__: compact_source(inspect.getsource(m)) for m in (baselines, parallel_probe, cmc)}


# ------------------------------------------------------------------------ leaderboard

def _points(c: Candidate) -> list[tuple[float, float]]:
    return [(acc, tok) for _, acc, tok in c.curve()]


def front_points(points: Sequence[tuple[float, float]]) -> set[tuple[float, float]]:
    """The (accuracy, tokens) points no other point beats on both (higher or equal accuracy
    for fewer or equal tokens)."""
    front: set[tuple[float, float]] = set()
    best = float("-inf")
    for p in sorted(set(points), key=lambda p: (p[1], -p[0])):
        if p[0] > best:
            front.add(p)
            best = p[0]
    return front


def rank_candidates(archive: Sequence[Candidate]) -> list[tuple[Candidate, int]]:
    """Scored candidates with their number of points on the archive's accuracy/token front,
    best first (most front points, then best accuracy, then fewest tokens)."""
    scored = [c for c in archive if c.ok]
    front = front_points([p for c in scored for p in _points(c)])
    ranked = []
    for c in scored:
        pts = _points(c)
        ranked.append((c, sum(1 for p in pts if p in front), max(a for a, _ in pts), min(t for _, t in pts)))
    ranked.sort(key=lambda r: (-r[1], -r[2], r[3]))
    return [(c, k) for c, k, _, _ in ranked]


def _tok(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def _label(c: Candidate) -> str:
    p = c.proposal
    bits = [p.class_name or "?", p.explorer or "?", f"gen {p.generation}"]
    if p.parents:
        bits.append("from " + ",".join(p.parents))
    return f"{c.id} ({'; '.join(bits)})"


def format_leaderboard(archive: Sequence[Candidate], limit: int = 8) -> str:
    """A compact table per candidate: accuracy % / mean tokens per question for each data
    set and their mean, one row per β. The best ``limit`` candidates by ``rank_candidates``."""
    ranked = rank_candidates(archive)
    failed = sum(1 for c in archive if c.failure)
    head = f"{len(ranked)} scored candidate(s), {failed} failed; the best {min(limit, len(ranked))} shown."
    if not ranked:
        return "No candidate has been scored yet."
    out = [head, "Cells are accuracy % / mean tokens per question; * marks a candidate on the accuracy/token front."]
    for c, front in ranked[:limit]:
        datas = sorted({s.data for s in c.scores})
        cells = {(s.data, s.beta): s for s in c.scores}
        width = max(12, *(len(d) for d in datas))
        out.append("")
        out.append(("* " if front else "  ") + _label(c))
        out.append("  " + "β".ljust(5) + "".join(d.ljust(width + 2) for d in datas) + "mean")
        for beta, acc, tok in c.curve():
            row = []
            for d in datas:
                s = cells.get((d, beta))
                row.append((f"{s.accuracy:.1f}/{_tok(s.mean_tokens)}" if s else "-").ljust(width + 2))
            out.append("  " + f"{beta:<5g}" + "".join(row) + f"{acc:.1f}/{_tok(tok)}")
    return "\n".join(out)


# --------------------------------------------------------------------------- messages

def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 20].rstrip() + "\n… (truncated)"


def user_prompt(
    *,
    archive: Sequence[Candidate],
    parent: Candidate | None,
    previous_failure: str | None,
    reference_sources: dict[str, str],
    leaderboard_size: int = 8,
    feedback_chars: int = 3000,
    failure_chars: int = 2000,
) -> str:
    parts = ["## Reference controllers\n(They may use private helpers of their modules; your code may not.)"]
    for name, src in reference_sources.items():
        parts.append(f"### {name}\n```python\n{src.rstrip()}\n```")
    parts.append("## Leaderboard (search data)\n" + format_leaderboard(archive, leaderboard_size))
    if parent is not None:
        parts.append(f"## Parent: {_label(parent)}\n```python\n{parent.proposal.source.strip(chr(10)).rstrip()}\n```")
        if parent.feedback.strip():
            parts.append("### Where the parent loses\n" + _clip(parent.feedback, feedback_chars))
    if previous_failure:
        parts.append("## Your previous proposal failed\n" + _clip(previous_failure, failure_chars)
                     + "\nDo not repeat this mistake.")
    if parent is not None:
        task = (f"Write a new controller that improves on the parent ({parent.id}): higher accuracy at "
                "the same tokens, or the same accuracy for fewer tokens, across β.")
    else:
        task = "Write a new controller that beats the reference controllers' accuracy/token trade-off across β."
    parts.append("## Task\n" + task + " Reply with the idea, then one ```python block with one complete controller.")
    return "\n\n".join(parts)


def build_messages(**kwargs) -> list[dict[str, str]]:
    """The chat messages for one proposal; keyword arguments as ``user_prompt``."""
    return [{"role": "system", "content": system_prompt()}, {"role": "user", "content": user_prompt(**kwargs)}]
