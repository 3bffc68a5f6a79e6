"""Research harness for the offline evolve explorer: how good a controller does it find?

Runs the explorer in-process (no sandbox, no MLflow: the rendered sources are our own),
ranked as the search ranks (gain of the β-curve over CMC's on the search split), scores
every proposal on the *search* split over a β sweep, re-scores the best few on the
*validation* split with the full shuffle count, picks the winner by point estimates (the
fewest mean tokens among (candidate, β) whose validation accuracy, averaged over the
datasets, reaches SC@64's; the search itself uses bootstrap lower bounds, see
``benchmarks/search_cv.py`` for the product's path), and prints the comparison table on the validation split:
winner per model, SC@64, CMC at several β, ASC, ESC. The quality goal: SC@64's accuracy
with at most 80% of CMC β=0.5's tokens.

    python benchmarks/evolve_quality.py                      # default-sized search
    python benchmarks/evolve_quality.py --candidates 96 --seed 3
    python benchmarks/evolve_quality.py --genome short_race  # just one seed genome, no search

Reads ../shared/data/autotts-replay (or AUTOTTS_DATA_DIR); single process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

from mlflow_autotts.controllers.baselines import AdaptiveConsistency, EarlyStoppingConsistency, SelfConsistency
from mlflow_autotts.controllers.cmc import ConfidenceMomentum
from mlflow_autotts.data.json_io import read_json
from mlflow_autotts.data.trajectory import Provenance, TrajectorySet
from mlflow_autotts.replay.episode import ReplayEpisode, shuffle_order
from mlflow_autotts.replay.results import EvalResult as Score
from mlflow_autotts.search.evolve import EvolveExplorer, genome_of
from mlflow_autotts.search.genome import SEEDS
from mlflow_autotts.search.split import split_problems
from mlflow_autotts.search.types import Candidate

MODELS = ("Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B")


def data_dir() -> Path:
    env = os.environ.get("AUTOTTS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "autotts-replay"


def load_sets() -> list[TrajectorySet]:
    d = data_dir()
    if not (d / MODELS[0] / "aime24.json").is_file():
        sys.exit(f"published replay data not found at {d} (set AUTOTTS_DATA_DIR)")
    return [read_json(d / m / "aime24.json", Provenance(m, "aime24")) for m in MODELS]


def controller_class(source: str, name: str) -> type:
    module = types.ModuleType(f"evolved_{name}")
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module.__dict__[name]


def replay(controller, ts: TrajectorySet, shuffles: int) -> tuple[float, float]:
    """(accuracy %, mean tokens per problem), means over shuffles 0..shuffles-1."""
    correct = tokens = 0
    solve = controller.solve
    for seed in range(shuffles):
        for prob in ts.problems:
            ep = ReplayEpisode(prob.branches, shuffle_order(prob.branches.n_branches, seed))
            correct += solve(ep) == prob.gold_answer
            tokens += ep.tokens_used
    n = shuffles * len(ts.problems)
    return 100.0 * correct / n, tokens / n


def scores(make, sets: list[TrajectorySet], betas, shuffles: int) -> list[Score]:
    out = []
    for b in betas:
        for ts in sets:
            acc, tok = replay(make(b), ts, shuffles)
            out.append(Score(ts.name, b, acc, tok))
    return out


def mean_point(ss: list[Score]) -> tuple[float, float]:
    return sum(s.accuracy for s in ss) / len(ss), sum(s.mean_tokens for s in ss) / len(ss)


def fmt_row(label: str, ss: list[Score]) -> str:
    acc, tok = mean_point(ss)
    per = " | ".join(f"{s.accuracy:5.1f} / {s.mean_tokens:9,.0f}" for s in ss)
    return f"{label:28s} {acc:6.2f} / {tok:9,.0f} | {per}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=48, help="proposals to score (default 48, the search default)")
    ap.add_argument("--population", type=int, default=8, help="proposals per generation")
    ap.add_argument("--seed", type=int, default=0, help="explorer seed")
    ap.add_argument("--betas", default="0,0.2,0.4,0.6,0.8,1", help="β sweep")
    ap.add_argument("--search-shuffles", type=int, default=20)
    ap.add_argument("--final-shuffles", type=int, default=100)
    ap.add_argument("--finalists", type=int, default=4)
    ap.add_argument("--select-margin", type=float, default=0.0,
                    help="points above SC@64's validation accuracy the winner must reach (default 0, as the search)")
    ap.add_argument("--genome", default=None, help=f"skip the search, evaluate one seed: {', '.join(SEEDS)}")
    a = ap.parse_args()
    betas = [float(x) for x in a.betas.split(",")]
    full = load_sets()
    search_sets, val_sets = zip(*(split_problems(ts) for ts in full))
    search_sets, val_sets = list(search_sets), list(val_sets)
    t0 = time.time()

    sc_s = mean_point(scores(lambda b: SelfConsistency(), search_sets, [None], a.search_shuffles))
    cmc_curve = {b: mean_point(scores(ConfidenceMomentum, search_sets, [b], a.search_shuffles))
                 for b in sorted(set(betas) | {0.5})}
    cmc_s = cmc_curve[0.5]
    budget = 0.8 * cmc_s[1]
    print(f"search split: SC@64 {sc_s[0]:.2f}% / {sc_s[1]:,.0f}; CMC β=0.5 {cmc_s[0]:.2f}% / {cmc_s[1]:,.0f}; "
          f"budget (0.8 × CMC β=0.5) {budget:,.0f}")

    cands: list[Candidate] = []
    if a.genome:
        g = SEEDS[a.genome]
        from mlflow_autotts.search.evolve import proposal_for
        p = proposal_for(g)
        cands.append(Candidate("c000", p, scores(controller_class(p.source, p.class_name), search_sets, betas,
                                                 a.search_shuffles)))
    else:
        explorer = EvolveExplorer(seed=a.seed, target_accuracy=sc_s[0], budget_tokens=budget,
                                  reference=tuple((tok, acc) for acc, tok in cmc_curve.values()))
        gen = 0
        while len(cands) < a.candidates:
            for p in explorer.propose(cands, min(a.population, a.candidates - len(cands)), gen):
                cid = f"c{len(cands):03d}"
                try:
                    c = Candidate(cid, p, scores(controller_class(p.source, p.class_name), search_sets, betas,
                                                 a.search_shuffles))
                except Exception as exc:  # a broken genome is a finding, not a crash
                    c = Candidate(cid, p, [], f"error: {type(exc).__name__}: {exc}")
                cands.append(c)
                blocks = "/".join(o for _, o in genome_of(c).blocks)
                curve = " ".join(f"{b:.1f}:{acc:.1f}/{tok / 1e3:.0f}k" for b, acc, tok in c.curve())
                print(f"{cid} gen {gen} {p.meta['op']:11s} {blocks:45s} {curve or c.failure} [{time.time() - t0:.0f}s]",
                      flush=True)
            gen += 1
        explorer_archive = explorer.archive(cands)
        ranked = explorer_archive.ranked(distinct=True)
        cands = [explorer_archive.candidates[cid] for cid in ranked[: a.finalists]]

    # validation: finalists and references, full shuffle count
    sc_v = scores(lambda b: SelfConsistency(), val_sets, [None], a.final_shuffles)
    cmc_v = {b: scores(ConfidenceMomentum, val_sets, [b], a.final_shuffles) for b in (0.25, 0.5, 0.75, 1.0)}
    asc_v = scores(lambda b: AdaptiveConsistency(), val_sets, [None], a.final_shuffles)
    esc_v = scores(lambda b: EarlyStoppingConsistency(), val_sets, [None], a.final_shuffles)
    sc_acc = mean_point(sc_v)[0]
    limit = 0.8 * mean_point(cmc_v[0.5])[1]
    best = None
    print(f"\nfinalists on validation ({a.final_shuffles} shuffles); SC@64 {sc_acc:.2f}%, token limit {limit:,.0f}")
    for c in cands:
        cls = controller_class(c.proposal.source, c.proposal.class_name)
        for b in betas:
            ss = scores(cls, val_sets, [b], a.final_shuffles)
            acc, tok = mean_point(ss)
            ok = acc >= sc_acc + a.select_margin
            print(f"  {c.id} β={b:.1f}: {acc:6.2f} / {tok:9,.0f} {'passes' if ok and tok <= limit else ''}")
            if ok and (best is None or (tok, -acc) < (best[3], -best[2])):
                best = (c, b, acc, tok, ss)
    print(f"\nvalidation split (10 problems per model, {a.final_shuffles} shuffles): mean acc / tokens | per model")
    print(" " * 29 + "mean" + " " * 16 + " | ".join(f"{m:^17s}" for m in MODELS))
    if best:
        c, b, acc, tok, ss = best
        print(fmt_row(f"winner {c.id} β={b:g}", ss))
    print(fmt_row("SC@64", sc_v))
    for b, ss in cmc_v.items():
        print(fmt_row(f"CMC β={b:g}", ss))
    print(fmt_row("ASC (64, 0.95)", asc_v))
    print(fmt_row("ESC (64, 8)", esc_v))
    if best:
        c, b, acc, tok, _ = best
        print(f"\nwinner: {c.id}, β={b:g}: {acc - sc_acc:+.2f} points vs SC@64, "
              f"{tok / mean_point(cmc_v[0.5])[1]:.0%} of CMC β=0.5's tokens")
        cls = controller_class(c.proposal.source, c.proposal.class_name)
        for label, sets in (("search split", search_sets), ("all 30 problems", full)):
            ss = scores(cls, sets, [b], a.final_shuffles)
            ref_sc = mean_point(scores(lambda _: SelfConsistency(), sets, [None], a.final_shuffles))[0]
            ref_cmc = mean_point(scores(ConfidenceMomentum, sets, [0.5], a.final_shuffles))[1]
            w_acc, w_tok = mean_point(ss)
            print(f"  same β on the {label}: {w_acc:.2f} / {w_tok:,.0f} vs SC@64 {ref_sc:.2f}, "
                  f"{w_tok / ref_cmc:.0%} of CMC β=0.5's tokens")
        print("\n" + c.proposal.source)
    else:
        print(f"\nno finalist reaches SC@64's validation accuracy + {a.select_margin}")
    print(f"[{time.time() - t0:.0f}s]")


if __name__ == "__main__":
    main()
