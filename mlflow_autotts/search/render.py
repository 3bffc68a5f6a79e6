"""Genome -> readable Python source of a controller.

The source holds only the blocks the genome chose (no interpreter, no dormant options),
so an evolved controller is read, checked, logged and served exactly like one an LLM or
a person wrote. Rendering is deterministic: the same genome always gives the same bytes.
"""

from __future__ import annotations

import textwrap
from typing import Callable

from mlflow_autotts.controllers.base import MAX_BRANCHES
from mlflow_autotts.search.genome import KNOBS, SLOTS, Genome, slope

MAX_ROUNDS = 8192
"""Rounds a rendered controller may take: enough for 64 branches read one after another
(a branch is at most ~70 intervals on the published data), so only the knobs end a
sequential read."""


def class_name(genome: Genome) -> str:
    return f"Evolved{genome.key()[:8]}"


def _num(x: float) -> str:
    x = round(float(x), 6)
    return str(int(x)) if x == int(x) else repr(x)


def knob_expression(genome: Genome, name: str) -> str:
    """The knob as a Python expression of ``b`` (β), e.g. ``round(2 + 6 * b)``."""
    spec = KNOBS[name]
    lo, hi = genome.line(name)
    s = slope(lo, hi)
    if s == 0:
        return _num(round(lo) if spec.integer else round(lo, 4))
    line = f"{_num(lo)} {'+' if s > 0 else '-'} {_num(abs(s))} * b"
    return f"round({line})" if spec.integer else f"round({line}, 4)"


def _uses_momentum(g: Genome) -> bool:
    return g.block("stop") == "momentum" or g.block("open") == "plateau"


def _caps(g: Genome) -> bool:
    return "cap" in g.used_knobs()


def _gives_up(g: Genome) -> bool:
    return "futile_after" in g.used_knobs()


def _docstring(g: Genome) -> str:
    lines = ["Evolved controller (offline `evolve` explorer). Blocks:", ""]
    for slot, opt in g.blocks:
        lines.append(f"- {slot}: {opt} -- {SLOTS[slot][opt]}")
    lines += ["", "Knobs, straight lines in b = beta (higher beta spends more):", ""]
    for name in g.used_knobs():
        lines.append(f"- {name} = {knob_expression(g, name)}: {KNOBS[name].doc}")
    wrapped = []
    for ln in lines:
        wrapped.extend(textwrap.wrap(ln, 92, subsequent_indent="  ") or [""])
    return "\n".join(wrapped)


def _drop_and_refilter(w: Callable[[str], None]) -> None:
    """The end of a prune rule: mark the chosen branches dropped, then refilter ``live``
    and make it ``alive`` (``live`` was ``alive``'s copy; both stay in opening order)."""
    w("                        dropped[k] = True")
    w("                    live = [k for k in live if not dropped[k]]")
    w("                    alive[:] = live  # live was alive's copy; both in opening order")


def render(genome: Genome) -> str:  # noqa: C901  (a template with one branch per block option)
    """Complete module source defining one ``Controller`` subclass for ``genome``."""
    g = genome
    cls = class_name(g)
    op, al, pr, st, vo = (g.block(s) for s in ("open", "alloc", "prune", "stop", "vote"))
    momentum = _uses_momentum(g)
    knobs = g.used_knobs()
    warmed = "warm_up" in knobs  # else every round is warm
    W = "warm and " if warmed else ""
    lengths = vo in ("short_weighted", "shorter", "len_weighted") or pr in ("overlong", "disagree_overlong")
    disagree = pr in ("disagree", "disagree_overlong")
    needs_winner = disagree or al == "leader_burst"
    # the tally that decisions (stop, give up, widen) look at
    V = "pool" if vo == "plurality" else "votes"
    out: list[str] = []
    w = out.append

    w('"""' + f"{cls}: a controller written by the offline evolve explorer (genome {g.key()})." + '"""')
    w("")
    w("from __future__ import annotations")
    w("")
    w("from mlflow_autotts.controllers.base import Controller")
    imports = ["Tally", "plurality"]
    if st == "probe_mix" or vo == "short_weighted":
        imports.insert(1, "beta_confidence")
    if vo == "len_weighted":
        imports.insert(1, "beta_confidence_of_weights")
    w(f"from mlflow_autotts.controllers.voting import {', '.join(imports)}")
    w("")
    w(f"MAX_ROUNDS = {MAX_ROUNDS}")
    w(f"MAX_BRANCHES = {MAX_BRANCHES}")
    w("")
    w("")
    if vo == "short_weighted":
        w("class WeightedVotes:")
        w('    """Finished answers, each counting (shortest length / its length) ** power."""')
        w("")
        w("    def __init__(self, lengths: list[tuple[str, int]], power: float):")
        w("        score: dict[str, float] = {}")
        w("        if lengths:")
        w("            shortest = min(n for _, n in lengths)")
        w("            for answer, n in lengths:")
        w("                score[answer] = score.get(answer, 0.0) + (shortest / n) ** power")
        w("        ranked = sorted(score.values(), reverse=True) + [0.0, 0.0]")
        w("        self.counts = score")
        w("        self.winner = max(score, key=score.__getitem__) if score else None")
        w("        self.top1, self.top2 = ranked[0], ranked[1]")
        w("        self.n = sum(score.values())  # total weight")
        w("")
        w("    def confidence(self) -> float:")
        w('        """Beta-majority confidence of the weighted counts, rounded to whole votes."""')
        w("        return beta_confidence(round(self.top1), round(self.top2))")
        w("")
        w("")
    if vo in ("len_weighted", "shorter") or pr in ("overlong", "disagree_overlong"):
        w("def median_length(lengths: list[tuple[str, int]]) -> float:")
        w('    """Median length, in intervals, of the finished branches in `lengths`."""')
        w("    ordered = sorted(n for _, n in lengths)")
        w("    return (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2")
        w("")
        w("")
    if vo == "len_weighted":
        w("class LengthWeightedVotes:")
        w('    """Finished answers, each counting (median length / its length) ** power, rescaled so the')
        w('    weights sum to the number of answers: shorter reasoning counts more, the total stays a count."""')
        w("")
        w("    def __init__(self, lengths: list[tuple[str, int]], power: float):")
        w("        score: dict[str, float] = {}")
        w("        if lengths:")
        w("            median = median_length(lengths)")
        w("            for answer, n in lengths:")
        w("                score[answer] = score.get(answer, 0.0) + (median / n) ** power")
        w("            scale = len(lengths) / sum(score.values())")
        w("            score = {answer: s * scale for answer, s in score.items()}")
        w("        ranked = sorted(score.values(), reverse=True) + [0.0, 0.0]")
        w("        self.counts = score")
        w("        self.winner = max(score, key=score.__getitem__) if score else None")
        w("        self.top1, self.top2 = ranked[0], ranked[1]")
        w("        self.n = len(lengths)")
        w("")
        w("    def confidence(self) -> float:")
        w('        """Beta-majority confidence of the weighted counts (interpolated between whole counts)."""')
        w("        return beta_confidence_of_weights(self.top1, self.top2)")
        w("")
        w("")
    w(f"class {cls}(Controller):")
    w('    """' + textwrap.indent(_docstring(g), "    ").lstrip())
    w('    """')
    w("")
    w(f'    name = "evolved_{g.key()[:8]}"')
    w("")
    w("    def __init__(self, beta: float = 0.5):")
    w("        super().__init__(beta)")
    w("        b = self.beta")
    for name in knobs:
        w(f"        self.{name} = {knob_expression(g, name)}")
    w("")
    w("    def knobs(self) -> dict:")
    w('        """The knob values at this β (for traces and logs)."""')
    w("        return {")
    for name in knobs:
        w(f'            "{name}": self.{name},')
    w("        }")
    w("")
    w("    def solve(self, episode) -> str | None:  # noqa: C901  (one algorithm, kept in one place)")
    for name in knobs:
        w(f"        {name} = self.{name}")
    w("        probe_new, probe_more = episode.probe_new, episode.probe_more")
    w("        index: list[int] = []  # episode index of each opened branch")
    w("        latest: list[str] = []  # its latest answer (intermediate, or final once finished)")
    w("        dropped: list[bool] = []  # pruned")
    w("        alive: list[int] = []  # branches neither finished nor dropped, in opening order")
    w("        probes: list[int] = []  # intervals taken since opening")
    if disagree:
        w("        disagree: list[int] = []  # consecutive rounds disagreeing with the leader")
    if st == "probe_mix":
        w("        settled: list[int] = []  # consecutive equal intermediate answers")
    w("        pool = Tally()  # final answers of finished branches")
    if lengths:
        w("        lengths: list[tuple[str, int]] = []  # (final answer, intervals) in finishing order")
    w("")
    w("        def finish(k: int, answer: str) -> None:")
    w("            alive.remove(k)")
    w("            pool.add(answer)")
    if lengths:
        w("            lengths.append((answer, probes[k] + 1))")
    w("")
    w("        def open_branches(count: int, limit: int) -> None:")
    w("            for _ in range(count):")
    w("                if len(index) >= limit:")
    w("                    return")
    w("                try:")
    w("                    answer, i, done = probe_new()")
    w("                except ValueError:  # no unopened branch left")
    w("                    return")
    w("                index.append(i)")
    w("                latest.append(answer)")
    w("                dropped.append(False)")
    w("                alive.append(len(index) - 1)")
    w("                probes.append(0)")
    if disagree:
        w("                disagree.append(0)")
    if st == "probe_mix":
        w("                settled.append(1)")
    w("                if done:")
    w("                    finish(len(index) - 1, answer)")
    w("")
    if vo != "plurality":
        w("        recount: list = [-1, None]  # (finished count, votes) at the last recount")
        w("")
    if vo == "shorter":
        w("        def counted() -> Tally:")
        w('            """The votes: finished answers at most `cut` times the median finished length (and the shortest)."""')
        w("            if recount[0] != pool.n:  # recount only when a branch has finished since")
        w("                limit = max(cut * median_length(lengths), min(n for _, n in lengths)) if lengths else 0")
        w("                recount[:] = [pool.n, Tally(answer for answer, n in lengths if n <= limit)]")
        w("            return recount[1]")
        w("")
    elif vo == "len_weighted":
        w("        def counted() -> LengthWeightedVotes:")
        w('            """The length-weighted votes of the finished answers."""')
        w("            if recount[0] != pool.n:  # recount only when a branch has finished since")
        w("                recount[:] = [pool.n, LengthWeightedVotes(lengths, power)]")
        w("            return recount[1]")
        w("")
    elif vo == "short_weighted":
        w("        def counted() -> WeightedVotes:")
        w('            """The length-weighted votes of the finished answers."""')
        w("            if recount[0] != pool.n:  # recount only when a branch has finished since")
        w("                recount[:] = [pool.n, WeightedVotes(lengths, power)]")
        w("            return recount[1]")
        w("")
    if vo == "plurality":
        w("        def leader() -> str | None:")
        w('            """Plurality of the finished answers."""')
        w("            return pool.winner")
    else:
        w("        def leader() -> str | None:")
        w('            """Winner of the counted votes."""')
        w("            return counted().winner")
    w("")
    w("        def final() -> str | None:")
    w("            if pool.n:")
    if vo == "plurality":
        w("                return leader()")
    else:
        w("                winner = leader()")
        w("                return pool.winner if winner is None else winner")
    w("            return plurality([latest[k] for k in range(len(index)) if not dropped[k]])")
    w("")
    if st == "probe_mix":
        w("        def confidence(votes: Tally) -> float:")
        w('            """Beta confidence of the votes plus weighted settled intermediate answers."""')
        w("            score: dict[str, float] = dict(votes.counts)")
        w("            for k in alive:")
        w('                if settled[k] >= settle and latest[k] != "ERR":')
        w("                    score[latest[k]] = score.get(latest[k], 0.0) + probe_weight")
        w("            top = sorted(score.values(), reverse=True) + [0.0, 0.0]")
        w("            return beta_confidence(int(top[0]), int(top[1]))")
        w("")
    # opening
    if op in ("fixed", "plateau"):
        w("        open_branches(n_init, n_init)")
    else:
        w("        max_open = min(max(n_init, max_open), MAX_BRANCHES)")
        w("        open_branches(n_init, max_open)")
    if op == "plateau":
        w("        max_open = min(max_open, MAX_BRANCHES)")
        w("        widen_from = max(1, warm_up // 2)" if warmed else "        widen_from = 1")
    w("        if not index:")
    w("            return None")
    if momentum:
        w("        ema = 0.0  # momentum: EMA of the votes' Beta confidence")
        w("        history: list[float] = []  # its last `window` values")
    w("        for r in range(MAX_ROUNDS):")
    if vo != "plurality" and (needs_winner or momentum):
        w("            votes = counted()")
    if needs_winner:
        w(f"            winner = {'votes.winner' if vo != 'plurality' else 'leader()'}")
    if momentum:
        w(f"            ema = (1.0 - alpha) * ema + alpha * {V}.confidence()")
        w("            history.append(ema)")
        w("            if len(history) > window:")
        w("                history.pop(0)")
    if warmed:
        w("            warm = r >= warm_up")
    w("            live = list(alive)")
    if disagree:
        w(f"            if {W}winner is not None:  # prune branches that keep disagreeing")
        w("                for k in live:")
        w("                    disagree[k] = disagree[k] + 1 if latest[k] != winner else 0")
        w("                stale = [k for k in live if disagree[k] >= patience]")
        w("                if stale:")
        w("                    stale.sort(key=lambda k: -disagree[k])")
        w("                    for k in stale[: max(0, len(live) - keep)]:")
        _drop_and_refilter(w)
    if pr in ("overlong", "disagree_overlong"):
        w("            if len(lengths) >= 2:  # prune running branches far longer than the median finished one")
        w("                limit = ratio * median_length(lengths)")
        w("                overlong = [k for k in live if probes[k] + 1 > limit]")
        w("                if overlong:")
        w("                    overlong.sort(key=lambda k: -probes[k])")
        w("                    for k in overlong[: max(0, len(live) - keep)]:")
        _drop_and_refilter(w)
    if al == "leader_burst":
        w("            live.sort(key=lambda k: -probes[k])  # most-probed first")
        w("            for k in live:")
        w(f"                steps = burst if {W}winner is not None and latest[k] == winner else 1")
        w("                for _ in range(steps):")
        w("                    answer, done = probe_more(index[k])")
        w("                    probes[k] += 1")
        if st == "probe_mix":
            w("                    settled[k] = settled[k] + 1 if answer == latest[k] else 1")
        w("                    latest[k] = answer")
        w("                    if done:")
        w("                        finish(k, answer)")
        w("                        break")
    else:
        w("            for k in live:  # one interval each")
        w("                answer, done = probe_more(index[k])")
        w("                probes[k] += 1")
        if st == "probe_mix":
            w("                settled[k] = settled[k] + 1 if answer == latest[k] else 1")
        w("                latest[k] = answer")
        w("                if done:")
        w("                    finish(k, answer)")
    if vo != "plurality":
        w("            votes = counted()")
    if momentum:
        w(f"            ema = (1.0 - alpha) * ema + alpha * {V}.confidence()")
        w("            history[-1] = ema")
        w("            delta = history[-1] - history[0] if len(history) >= 2 else 0.0")
    if st == "beta":
        w(f"            if {W}pool.n >= min_done and {V}.confidence() >= threshold:")
    elif st == "momentum":
        w(f"            if {W}pool.n >= min_done and ema >= threshold and delta >= -slack:")
    elif st == "margin":
        w(f"            if {W}pool.n >= min_done and {V}.top1 - {V}.top2 >= margin:")
    else:
        w(f"            if {W}pool.n >= min_done and confidence({V}) >= threshold:")
    w("                return final()")
    s2 = g.block("stop2")
    if s2 != "none" and s2 != st:  # a second stopping rule, OR-ed with the first
        if s2 == "margin":
            w(f"            if {W}pool.n >= min_done and {V}.top1 - {V}.top2 >= margin:  # second rule")
        elif s2 == "beta":
            w(f"            if {W}pool.n >= min_done and {V}.confidence() >= threshold:  # second rule")
        else:
            w("            if pool.n >= agree and pool.top1 == pool.n:  # second rule: unanimous")
        w("                return final()")
    if _caps(g):
        w("            if pool.n >= cap:  # budget cap: enough finished answers, however split")
        w("                return final()")
    if _gives_up(g):
        w("            if pool.n >= futile_after and pool.top1 < futile_share * pool.n:  # scattered: give up")
        w("                return final()")
    if op in ("fixed", "plateau"):
        w("            if not alive:")
        w("                break")
        if op == "plateau":
            w("            if len(index) < max_open and delta <= trend and r >= widen_from and ema < threshold:")
            w("                open_branches(widen, max_open)")
    else:
        w("            running = len(alive)")
        if op == "refill":
            w("            if running < n_init:  # keep n_init branches running")
            w("                open_branches(n_init - running, max_open)")
        elif op == "contest":
            w("            width = n_init + widen * (pool.n - pool.top1)  # wider race while answers disagree")
            w("            if running < width:")
            w("                open_branches(width - running, max_open)")
        else:
            w("            if running == 0 or (r + 1) % every == 0:  # scheduled widening")
            w("                open_branches(widen, max_open)")
        w("            if not alive:")
        w("                break")
    w("        return final()")
    return "\n".join(out) + "\n"
