"""How finely can the published data tell two β-curves apart? (the search's acceptance, measured)

Replays, in-process on every problem of the published AIME 2024 data (4 models × 30),
CMC at the selection's β points, SC@64, and one seed genome over a β sweep (rendered by
our own code, as ``evolve_quality.py`` does), and reduces each to per-problem means over
shuffles. A paired bootstrap over problems (stratified by model) then prints:

- **the curve's ends**: for each CMC β point, the seed's tokens saved at CMC's accuracy
  with a 90% interval, and the share of resamples in which the seed reaches that
  accuracy with fewer tokens; plus, at CMC's cheapest and dearest points, the seed's
  accuracy difference at its own neighbouring points (is "at or above" decidable there?);
- **what the selection rule can see**: the one-sided lower bound at ``--confidence`` of a
  point's accuracy gain over SC@64 is ``mean - z · sd``; with ``--per-model`` validation
  problems per model (10 in the default 1/3 split) the sd is this run's sd scaled by
  √(30 / per-model). The printout gives that margin (the gain a point must *show* on the
  validation split for its lower bound to reach SC@64), the seed's in-sample gain at each
  β, and the tokens at which the seed's curve shows that gain, as a multiple of CMC β=0.5's.

    python benchmarks/curve_resolution.py                       # race_then_read, 20 shuffles (~1 min)
    python benchmarks/curve_resolution.py --genome contest_race --shuffles 50

In-sample by design (every problem, no search): it measures the data's resolution, not a
search's generalisation (``search_cv.py`` does that).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import types

import numpy as np

from mlflow_autotts.controllers.baselines import SelfConsistency
from mlflow_autotts.controllers.cmc import ConfidenceMomentum
from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.replay.episode import ReplayEpisode, shuffle_order
from mlflow_autotts.search.bootstrap import ProblemTable, Resampler, interval
from mlflow_autotts.search.config import PUBLISHED_AIME24
from mlflow_autotts.search.curves import dominance_margins, front, tokens_to_reach
from mlflow_autotts.search.evolve import proposal_for
from mlflow_autotts.search.genome import SEEDS
from mlflow_autotts.search.selection import CMC_BETAS, CMC_BUDGET_BETA


def seed_class(name: str) -> type:
    """The seed genome's rendered controller class (our own code: run in-process)."""
    proposal = proposal_for(SEEDS[name])
    module = types.ModuleType(proposal.class_name)
    exec(compile(proposal.source, f"<{name}>", "exec"), module.__dict__)
    return module.__dict__[proposal.class_name]


def table(controller, sets, shuffles: int) -> ProblemTable:
    """Per-problem means over shuffles 0..shuffles-1."""
    rows, sizes = [], {}
    for ts in sets:
        sizes[ts.name] = len(ts.problems)
        for p, prob in enumerate(ts.problems):
            for seed in range(shuffles):
                ep = ReplayEpisode(prob.branches, shuffle_order(prob.branches.n_branches, seed))
                rows.append((ts.name, p, controller.solve(ep) == prob.gold_answer, ep.tokens_used))
    return ProblemTable.from_rows(rows, sizes)


def z_of(confidence: float) -> float:
    return statistics.NormalDist().inv_cdf(confidence)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genome", default="race_then_read", help=f"seed genome: {', '.join(SEEDS)}")
    ap.add_argument("--betas", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1", help="the seed's β sweep")
    ap.add_argument("--shuffles", type=int, default=20)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--confidence", type=float, default=0.8, help="one-sided, as the search's select_confidence")
    ap.add_argument("--per-model", type=int, default=10, help="validation problems per model the rule sees")
    a = ap.parse_args()
    sets = load_datasets(list(PUBLISHED_AIME24))
    t0 = time.time()
    klass = seed_class(a.genome)
    seed = {float(b): table(klass(float(b)), sets, a.shuffles) for b in a.betas.split(",")}
    cmc = {b: table(ConfidenceMomentum(b), sets, a.shuffles) for b in CMC_BETAS}
    sc64 = table(SelfConsistency(), sets, a.shuffles)
    n_per = min(len(ts.problems) for ts in sets)
    print(f"{a.genome} at {len(seed)} β, CMC at {len(cmc)} β, SC@64; {len(sets)} models × {n_per} problems, "
          f"{a.shuffles} shuffles ({time.time() - t0:.0f} s); {a.resamples} paired resamples, stratified by model")

    r = Resampler({d: len(x) for d, x in sc64.accuracy.items()}, a.resamples, seed=0)
    S = {b: r.means(t) for b, t in seed.items()}
    C = {b: r.means(t) for b, t in cmc.items()}
    sc_acc, _ = r.means(sc64)
    sc_point = sc64.point()[0]
    half = cmc[CMC_BUDGET_BETA].point()[1]
    print(f"\nSC@64: {sc_point:.2f}%; CMC β=0.5: {cmc[CMC_BUDGET_BETA].point()[0]:.2f}% / {half:,.0f} tokens")
    print(f"{'β':>5} {a.genome + ' (acc / tokens)':>34} {'CMC (acc / tokens)':>24}")
    for b in sorted(set(seed) | set(cmc)):
        s = f"{seed[b].point()[0]:6.2f} / {seed[b].point()[1]:9,.0f}" if b in seed else ""
        c = f"{cmc[b].point()[0]:6.2f} / {cmc[b].point()[1]:9,.0f}" if b in cmc else ""
        print(f"{b:5.2f} {s:>34} {c:>24}")

    # -- the ends: dominance at each CMC point, with its uncertainty
    def pts(d: dict, k: int) -> list[tuple[float, float]]:
        return [(tok[k], acc[k]) for acc, tok in d.values()]
    est = dominance_margins([t.point()[::-1] for t in seed.values()], [t.point()[::-1] for t in cmc.values()])
    boot = np.array([dominance_margins(pts(S, k), pts(C, k)) for k in range(a.resamples)])
    print("\nthe seed's curve at each CMC β point: tokens saved at CMC's accuracy [90% interval; -100% = never]")
    order = sorted(cmc, key=lambda b: cmc[b].point()[1])
    for j, b in enumerate(order):
        col = np.where(np.isfinite(boot[:, j]), boot[:, j], -1.0)
        lo, hi = interval(col, 0.9)
        shown = f"{est[j]:+.1%}" if math.isfinite(est[j]) else "never"
        print(f"  CMC β={b:.2f}: {shown} [{lo:+.1%}, {hi:+.1%}]; dominated in {(boot[:, j] > 0).mean():.0%} of resamples")
    print(f"  every point dominated in {(boot.min(axis=1) > 0).mean():.0%} of resamples")
    for label, cb in (("cheapest", order[0]), ("dearest", order[-1])):
        c_acc, _ = C[cb]
        ct = cmc[cb].point()[1]
        near = sorted(seed, key=lambda b: abs(seed[b].point()[1] - ct))[:2]
        for b in sorted(near):
            d = S[b][0] - c_acc
            lo, hi = interval(d, 0.9)
            print(f"  CMC's {label} point (β={cb:g}) against the seed at β={b:g}: accuracy "
                  f"{seed[b].point()[0] - cmc[cb].point()[0]:+.2f} [{lo:+.2f}, {hi:+.2f}] points at "
                  f"{seed[b].point()[1] / ct:.2f}× its tokens; at or above in {(d >= 0).mean():.0%} of resamples")

    # -- what the selection rule can see on a validation split of per-model problems
    z = z_of(a.confidence)
    scale = math.sqrt(n_per / a.per_model)
    print(f"\nthe selection rule: a point's {a.confidence:.0%} lower bound over SC@64 reaches 0 only if its "
          f"validation gain is ≥ z·sd (z = {z:.2f}), with sd scaled to {a.per_model} problems per model:")
    need_by_b = {}
    for b in sorted(seed):
        d = S[b][0] - sc_acc
        need = z * float(np.std(d)) * scale
        need_by_b[b] = need
        print(f"  β={b:4.2f}: in-sample gain {seed[b].point()[0] - sc_point:+.2f}, needed on validation "
              f"≥ {need:.2f} points; tokens {seed[b].point()[1] / half:.3f}× CMC β=0.5's")
    typical = statistics.median(need_by_b.values())
    fr = front([(t.point()[1], t.point()[0]) for t in seed.values()])
    reach_sc = tokens_to_reach(fr, sc_point)
    reach_need = tokens_to_reach(fr, sc_point + typical)
    best = max(t.point()[0] for t in seed.values()) - sc_point
    print(f"  the seed's curve reaches SC@64 at {reach_sc / half:.3f}× CMC β=0.5's tokens, "
          f"SC@64 + {typical:.2f} (the median margin needed) at "
          + (f"{reach_need / half:.3f}×" if math.isfinite(reach_need) else f"no β (its best gain is {best:+.2f})"))
    print(f"  CMC's best in-sample gain over SC@64: "
          f"{max(t.point()[0] for t in cmc.values()) - sc_point:+.2f} points")


if __name__ == "__main__":
    main()
