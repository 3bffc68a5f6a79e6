"""Cross-validation and ablation of the default search: does its winner hold on held-out problems?

Runs the product's search (split, references, explorer, sandboxed loop, bootstrap
selection; no MLflow) with ``split_fold`` k held out, for each fold asked, and stores per
fold the objective after every candidate and the per-problem validation tables of the
winner, SC@64 and CMC. ``--report`` pools the folds (every problem held out once) and
prints, with paired bootstrap intervals over problems (stratified by model):

- the winners' β-curve against CMC's at each CMC β point (tokens saved at CMC's accuracy);
- the selected points' accuracy against SC@64's and tokens against CMC β=0.5's;
- the objective after the seeds (candidate 10) and at the end.

    python benchmarks/search_cv.py --fold 0 --out /tmp/cv/evolve-0.json          # one fold (≈4–5 min, 2 cores)
    python benchmarks/search_cv.py --fold 0 --mode seeds --out /tmp/cv/seeds-0.json  # ablation: no evolution
    python benchmarks/search_cv.py --report /tmp/cv/evolve-*.json
    (--cache FILE.pkl stores a fold's search, and reruns only the selection when it exists)

Modes: ``evolve`` (the default search), ``seeds`` (the seeds and their random mutants, no
archive feedback: the same budget without evolution).

The held-out fold of a plain run is the search's *validation* split: the search never sees
it, but the selection picks the winner (finalist and β) on it, so the winner's figures there
carry the luck it was picked for. ``--test-fold t`` nests the split (``nested_split``): fold
t of every dataset is a test block that neither the search nor the selection sees, the
other two folds are the search and validation splits, and every finalist and the baselines
are also replayed on the test block; ``--report`` on such files prints the picks of the product's rule (per-point lower
bounds) and of simultaneous bounds (``bootstrap.simultaneous_lower_bounds``) on the test
blocks, then the full tables of the product's picks there:

    python benchmarks/search_cv.py --test-fold 0 --out /tmp/ncv/evolve-0.json --cache /tmp/ncv/evolve-0.pkl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import time
from dataclasses import replace

import numpy as np

from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.sandbox.process import ProcessSandbox
from mlflow_autotts.search.bootstrap import ProblemTable, Resampler, interval, lower_bound, simultaneous_lower_bounds
from mlflow_autotts.search.config import SearchConfig, build_config
from mlflow_autotts.search.curves import dominance_margins, gain_over, tokens_to_reach, front
from mlflow_autotts.search.job import archive_factory, make_explorer, measure_references, split_data
from mlflow_autotts.search.loop import NullRecorder, Scorer, run_search, search_limits
from mlflow_autotts.search.selection import (CMC_BETAS, CMC_BUDGET_BETA, Point, baselines, choose, curve_stats,
                                            select, tables_of_outcome)
from mlflow_autotts.search.split import SEARCH_SUFFIX, VALIDATION_SUFFIX, validation_indices


class Recorder(NullRecorder):
    """Keeps the objective after every candidate (no MLflow)."""

    def __init__(self) -> None:
        self.objective: list[float] = []

    def progress(self, p):
        self.objective.append(p.best_objective)


def _table_json(t: ProblemTable) -> dict:
    return {"accuracy": {d: a.tolist() for d, a in t.accuracy.items()},
            "tokens": {d: x.tolist() for d, x in t.tokens.items()}}


def _table(d: dict) -> ProblemTable:
    return ProblemTable({k: np.array(v) for k, v in d["accuracy"].items()},
                        {k: np.array(v) for k, v in d["tokens"].items()})


def nested_split(config: SearchConfig, test_fold: int) -> tuple[list, list, list]:
    """(search, validation, test) by rotating the three folds of the default split: fold
    t is the test block, which neither the search nor the selection sees, fold t + 1
    validates and fold t + 2 is searched on (10 + 10 problems of a 30-problem set, against
    the default run's 20 + 10), so over t = 0, 1, 2 every fold plays every part once."""
    out: tuple[list, list, list] = ([], [], [])
    for ts in load_datasets(list(config.data)):
        test = validation_indices(ts, config.selection.split_seed, fold=test_fold)
        val = validation_indices(ts, config.selection.split_seed, fold=(test_fold + 1) % 3)
        taken = set(test) | set(val)
        search = [p for p in range(len(ts)) if p not in taken]
        for part, idx, suffix in zip(out, (search, val, test), (SEARCH_SUFFIX, VALIDATION_SUFFIX, ":test")):
            part.append(ts.subset(idx, suffix))
    return out


def on_test(config: SearchConfig, sel, archive, test_sets: list) -> dict:
    """Every finalist (all its β) and the baselines replayed on the test block: finalists in
    the sandbox, as the selection scores them; any selection rule can then be judged on
    data it never saw."""
    sizes = {ts.name: len(ts) for ts in test_sets}
    sc, _, base = baselines(test_sets, config.selection.final_shuffles, config.pool)
    box = ProcessSandbox(search_limits(config.scoring, scale=5))
    seeds = list(range(config.selection.final_shuffles))
    finalists = {}
    for cid in sel.finalists:
        c = archive.candidates[cid]
        outcome = box.score(c.proposal.source, test_sets, config.betas, seeds, class_name=c.proposal.class_name)
        if outcome.ok:
            finalists[cid] = {str(b): _table_json(t) for b, t in tables_of_outcome(outcome, sizes).items()}
    return {"finalists": finalists, "sc64": _table_json(base[(sc.label, None)]),
            "cmc": {str(b): _table_json(t) for (label, b), t in base.items() if label == "cmc"}}


def run_fold(fold: int, mode: str, candidates: int, workers: int, cache: str | None = None,
             test_fold: int | None = None) -> dict:
    """Search and select on one fold; with ``cache`` (a pickle path) the search is stored
    there, or read from it when it exists (then only the selection runs again). With
    ``test_fold`` the split is nested (``nested_split``) and the finalists and baselines
    are also replayed on the test block."""
    config = build_config(None, {"split_fold": fold, "max_candidates": candidates, "workers": workers})
    t0 = time.perf_counter()
    if test_fold is None:
        search_sets, validation_sets = split_data(config.data, config.selection)
    else:
        search_sets, validation_sets, test_sets = nested_split(config, test_fold)
    if cache and os.path.exists(cache):
        with open(cache, "rb") as fh:
            refs, scored, objective, search_s = pickle.load(fh)
        explorer = make_explorer(config.exploration, refs)
        archive = archive_factory(explorer, refs)(scored)
    else:
        refs = measure_references(search_sets, config.betas, config.scoring.search_shuffles, config.pool)
        explorer = make_explorer(config.exploration, refs)
        if mode == "seeds":
            explorer = replace(explorer, feedback=False)
        rec = Recorder()
        outcome = run_search(config.budget, explorer, Scorer(config.scoring, config.betas, search_sets), rec,
                             archive_factory(explorer, refs), workers=config.workers, progress_bar=False)
        scored, objective, archive = outcome.candidates, rec.objective, outcome.archive
        search_s = time.perf_counter() - t0
        if cache:
            with open(cache, "wb") as fh:
                pickle.dump((refs, scored, objective, search_s), fh)
    t1 = time.perf_counter()
    sel = select(config.selection, archive, validation_sets, config.betas, seed=config.exploration.seed,
                 workers=config.pool)
    w, p = sel.winner, sel.winner_point
    test = on_test(config, sel, archive, test_sets) if test_fold is not None else None
    return {
        "fold": fold if test_fold is None else test_fold, "nested": test_fold is not None, "test": test,
        "finalist_tables": {cid: {str(b): _table_json(t) for b, t in sel.tables[cid].items()}
                            for cid in sel.finalists},
        "mode": mode, "candidates": len(scored), "search_s": search_s,
        "total_s": search_s + time.perf_counter() - t1, "objective": objective,
        "winner": w.id if w else None, "winner_op": w.proposal.meta.get("op") if w else None,
        "winner_blocks": (w.proposal.meta.get("genome") or {}).get("blocks") if w else None,
        "beta": p.beta if p else None, "tier": sel.tier,
        "vs_sc64": p.vs_sc64 if p else None,
        "curve_gain": sel.winner_curve.gain_over_cmc if sel.winner_curve else None,
        "dominance": sel.winner_curve.dominance if sel.winner_curve else None,
        "tables": {
            "winner": {str(b): _table_json(t) for b, t in sel.tables.get(w.id, {}).items()} if w else {},
            "sc64": _table_json(sel.tables[sel.sc_label][None]),
            "cmc": {str(b): _table_json(t) for b, t in sel.tables["cmc"].items()},
        },
    }


def pool(tables: list[ProblemTable]) -> ProblemTable:
    """Folds' tables of one configuration side by side (disjoint problems per dataset)."""
    def base(name: str) -> str:
        return name.rsplit(":", 1)[0]
    acc: dict[str, list] = {}
    tok: dict[str, list] = {}
    for t in tables:
        for d in t.accuracy:
            acc.setdefault(base(d), []).append(t.accuracy[d])
            tok.setdefault(base(d), []).append(t.tokens[d])
    return ProblemTable({d: np.concatenate(v) for d, v in acc.items()}, {d: np.concatenate(v) for d, v in tok.items()})


def fmt(ci: tuple[float, float], est: float, spec: str = "+.2f") -> str:
    return f"{est:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]"


def report(folds: list[dict], confidence: float = 0.9, resamples: int = 2000) -> None:
    print(f"{len(folds)} fold(s): {', '.join(str(f['fold']) for f in folds)}; mode {folds[0]['mode']}")
    for f in folds:
        obj = f["objective"]
        at10 = obj[9] if len(obj) >= 10 else float("nan")
        print(f"  fold {f['fold']}: {f['candidates']} candidates in {f['search_s']:.0f} s search, {f['total_s']:.0f} s "
              f"total; objective (gain over CMC, search split) after 4: {obj[3]:+.2f}, after 10: {at10:+.2f}, "
              f"end: {obj[-1]:+.2f}; last improvement at candidate {1 + max(i for i in range(len(obj)) if obj[i] > obj[i - 1] or i == 0)}; "
              f"winner {f['winner']} ({f['winner_op']}, {f['winner_blocks']}) at β={f['beta']} (tier {f['tier']}); "
              f"validation vs SC@64 {f['vs_sc64']}, curve gain {f['curve_gain']}")
    betas = sorted({b for f in folds for b in f["tables"]["winner"]}, key=float)
    win = {b: pool([_table(f["tables"]["winner"][b]) for f in folds]) for b in betas}
    cmc = {b: pool([_table(f["tables"]["cmc"][b]) for f in folds]) for b in folds[0]["tables"]["cmc"]}
    sc64 = pool([_table(f["tables"]["sc64"]) for f in folds])
    # the selected point of each fold's winner, on that fold: pooled as one table
    selected = pool([_table(f["tables"]["winner"][str(f["beta"])]) for f in folds])
    sizes = {d: len(a) for d, a in sc64.accuracy.items()}
    r = Resampler(sizes, resamples, seed=0)
    print(f"pooled held-out problems per model: {sizes}; {confidence:.0%} intervals, {resamples} paired resamples")
    W = {b: r.means(t) for b, t in win.items()}
    C = {b: r.means(t) for b, t in cmc.items()}
    S = r.means(sc64)
    SEL = r.means(selected)

    def pts(d: dict, k: int | None) -> list[tuple[float, float]]:
        if k is None:
            return [t.point()[::-1] for t in (win if d is W else cmc).values()]
        return [(tok[k], acc[k]) for acc, tok in d.values()]

    print("\nβ-curves on held-out problems (accuracy % / mean tokens):")
    for b, t in win.items():
        a, x = t.point()
        print(f"  winner β={float(b):.1f}: {a:6.2f} / {x:9,.0f}")
    for b, t in cmc.items():
        a, x = t.point()
        print(f"  CMC    β={float(b):.2f}: {a:6.2f} / {x:9,.0f}")
    a, x = sc64.point()
    print(f"  SC@64        : {a:6.2f} / {x:9,.0f}")
    margins = np.array([dominance_margins(pts(W, k), pts(C, k)) for k in range(resamples)])
    est = dominance_margins(pts(W, None), pts(C, None))
    print("\nwinner's curve against each CMC β point: share of CMC's tokens saved at CMC's accuracy")
    for j, (b, m) in enumerate(zip(sorted(cmc, key=lambda b: cmc[b].point()[1]), est)):
        col = margins[:, j]
        finite = col[np.isfinite(col)]
        lo, hi = interval(np.where(np.isfinite(col), col, -1.0), confidence)
        print(f"  CMC β={float(b):.2f}: saved {m:+.1%} [{lo:+.1%}, {hi:+.1%}]; reached in "
              f"{len(finite) / resamples:.0%} of resamples, dominated in {(col > 0).mean():.0%}")
    allpos = (margins.min(axis=1) > 0).mean()
    print(f"  every CMC point dominated: {'yes' if min(est) > 0 else 'no'} (in {allpos:.0%} of resamples)")
    gains = [gain_over(pts(W, k), pts(C, k)) for k in range(resamples)]
    print(f"  curve gain over CMC (points): {fmt(interval(gains, confidence), gain_over(pts(W, None), pts(C, None)))}")
    cmc_half = C[str(CMC_BUDGET_BETA)] if str(CMC_BUDGET_BETA) in C else C[CMC_BUDGET_BETA]
    d_acc = SEL[0] - S[0]
    ratio = SEL[1] / cmc_half[1]
    sel_a, sel_t = selected.point()
    print(f"\nselected points (each fold's winner at its β, on its fold): {sel_a:.2f}% / {sel_t:,.0f} tokens")
    print(f"  accuracy − SC@64's: {fmt(interval(d_acc, confidence), sel_a - sc64.point()[0])} points")
    half = cmc[str(CMC_BUDGET_BETA)].point()[1]
    print(f"  tokens / CMC β=0.5's: {fmt(interval(ratio, confidence), sel_t / half, '.3f')}")
    sc_need = [tokens_to_reach(front(pts(W, k)), S[0][k]) / cmc_half[1][k] for k in range(resamples)]
    need = tokens_to_reach(front(pts(W, None)), sc64.point()[0]) / half
    finite = np.array([x if math.isfinite(x) else 9.99 for x in sc_need])
    print(f"  winner curve's tokens to reach SC@64's accuracy / CMC β=0.5's: "
          f"{fmt(interval(finite, confidence), need, '.3f')}")


BOUNDS = ("per-point", "simultaneous")


def reselect(fold: dict, config: SearchConfig = SearchConfig()) -> dict[str, tuple[str, float, int]]:
    """The (finalist, β, tier) the selection picks from a fold's stored validation tables,
    by each kind of lower bound over SC@64: ``per-point`` (the product's rule) and
    ``simultaneous``. The bootstrap and the curves, which the bounds do not change, are
    computed once for both."""
    t = fold["tables"]
    sc64 = _table(t["sc64"])
    cmc = {float(b): _table(x) for b, x in t["cmc"].items()}
    fin = {cid: {float(b): _table(x) for b, x in bt.items()} for cid, bt in fold["finalist_tables"].items()}
    r = Resampler({d: len(a) for d, a in sc64.accuracy.items()}, config.selection.bootstrap_resamples,
                  seed=config.exploration.seed)
    conf = config.selection.select_confidence
    sc_acc = r.means(sc64)[0]
    keys = [(cid, b) for cid, bt in fin.items() for b in bt]
    diffs = np.array([r.means(fin[cid][b])[0] - sc_acc for cid, b in keys])
    est = np.array([fin[cid][b].point()[0] - sc64.point()[0] for cid, b in keys])
    curves = {cid: curve_stats(bt, cmc, r, conf) for cid, bt in fin.items()}
    lows = {"per-point": [lower_bound(d, conf) for d in diffs],
            "simultaneous": simultaneous_lower_bounds(diffs, est, conf)}
    picks = {}
    for bounds in BOUNDS:
        points = [Point(cid, b, *fin[cid][b].point(), {}, (lo, e, math.inf))
                  for (cid, b), lo, e in zip(keys, lows[bounds], est)]
        best, tier = choose(points, curves, config.selection.select_margin)
        picks[bounds] = (best.label, best.beta, tier)
    return picks


def on_test_block(fold: dict, pick: tuple[str, float, int]) -> dict:
    """A nested fold as ``report`` reads it, with the test block's tables in place of the
    validation ones and ``pick`` as its winner."""
    cid, beta, tier = pick
    t = fold["test"]
    return dict(fold, winner=cid, beta=beta, tier=tier,
                tables={"winner": t["finalists"][cid], "sc64": t["sc64"], "cmc": t["cmc"]})


def report_nested(folds: list[dict], confidence: float = 0.9, resamples: int = 2000) -> None:
    """The selected points on the test blocks, which neither search nor selection saw,
    under each selection rule."""
    sc64 = pool([_table(f["test"]["sc64"]) for f in folds])
    half = pool([_table(f["test"]["cmc"][str(CMC_BUDGET_BETA)]) for f in folds])
    r = Resampler({d: len(a) for d, a in sc64.accuracy.items()}, resamples, seed=0)
    S, H = r.means(sc64), r.means(half)
    print(f"nested: {len(folds)} test block(s), {dict(r.sizes)} problems; SC@64 {sc64.point()[0]:.2f}% / "
          f"{sc64.point()[1]:,.0f}; CMC β=0.5 {half.point()[0]:.2f}% / {half.point()[1]:,.0f}")
    by_fold = [reselect(f) for f in folds]
    for bounds in BOUNDS:
        picks = [p[bounds] for p in by_fold]
        if bounds == "per-point":
            assert [(c, b) for c, b, _ in picks] == [(f["winner"], f["beta"]) for f in folds], "rebuild differs"
        sel = pool([_table(f["test"]["finalists"][c][str(b)]) for f, (c, b, _) in zip(folds, picks)])
        A = r.means(sel)
        a, x = sel.point()
        print(f"\n{bounds} bounds: picks {', '.join(f'{c}@{b} (tier {t})' for c, b, t in picks)}")
        print(f"  test accuracy − SC@64's: {fmt(interval(A[0] - S[0], confidence), a - sc64.point()[0])} points; "
              f"tokens / CMC β=0.5's: {fmt(interval(A[1] / H[1], confidence), x / half.point()[1], '.3f')}")
        for f, (c, b, _) in zip(folds, picks):
            one = _table(f["test"]["finalists"][c][str(b)])
            print(f"  test block {f['fold']}: {one.point()[0]:.2f}% / {one.point()[1]:,.0f} against SC@64 "
                  f"{_table(f['test']['sc64']).point()[0]:.2f}%")
        if bounds == "per-point":
            print("\nthe product's picks on the test blocks, in full:")
            report([on_test_block(f, p) for f, p in zip(folds, picks)], confidence, resamples)
            print("\nthe same picks on the validation blocks they were picked on:")
            report(folds, confidence, resamples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--mode", choices=("evolve", "seeds"), default="evolve")
    ap.add_argument("--candidates", type=int, default=SearchConfig().max_candidates)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON file for this fold")
    ap.add_argument("--cache", default=None, help="pickle of the search: written, or reused to rerun only the selection")
    ap.add_argument("--test-fold", type=int, default=None,
                    help="nested: hold this fold out of search and selection, and replay the finalists on it")
    ap.add_argument("--report", nargs="+", default=None, help="pool these fold files and print the tables")
    a = ap.parse_args()
    if a.report:
        folds = [json.load(open(p)) for p in a.report]
        (report_nested if all(f.get("nested") for f in folds) else report)(folds)
        return
    out = run_fold(a.fold, a.mode, a.candidates, a.workers, a.cache, a.test_fold)
    text = json.dumps(out)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text)
    report_line = {k: out[k] for k in ("fold", "mode", "candidates", "search_s", "total_s", "winner", "beta", "tier",
                                        "vs_sc64", "curve_gain", "dominance")}
    print(json.dumps(report_line))


if __name__ == "__main__":
    main()
