"""Cost of the pyfunc layer: a controller behind ``mlflow.pyfunc`` against the bare controller.

    AUTOTTS_DATA_DIR=../shared/data/autotts-replay python benchmarks/model_overhead.py

Each call replays one question (cycling through the dataset's questions, a new shuffle
seed per round) at each level below, timed back to back on the same question so that
machine noise hits them alike:

1. ``direct``: ``controller.solve(ReplayEpisode(branches, order))`` on prebuilt branches,
   then reading the episode's tokens, branches opened and intervals (what the model returns);
2. ``direct+parse``: the same, starting from the request's published triples
   (``parse_trajectory``), the least any entry point taking that format must do;
3. ``ControllerModel``: our ``predict`` (DataFrame in, DataFrame out), without MLflow;
4. ``pyfunc``: ``mlflow.pyfunc.load_model(...).predict(df, params=...)``, what users call
   (adds MLflow's input-schema and params enforcement);
5. ``mlflow floor``: an empty pyfunc model (returns its input) with the same signature, on
   the same DataFrame: MLflow's fixed cost per call, which no model code can avoid.

The same is then measured for the whole dataset in one batch. The summary states the
overhead (``pyfunc`` against ``direct``) per question and per batch, and how much of it is
MLflow's floor. Models are saved to a temporary folder (no tracking server needed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.uris import load_datasets
from mlflow_autotts.replay.episode import ReplayEpisode, shuffle_order
from mlflow_autotts.serving.payload import parse_trajectory
from mlflow_autotts.tracking.model import input_example, model_signature, save_controller_model

LEVELS = ("direct", "direct+parse", "ControllerModel", "pyfunc", "mlflow floor")
TARGET = 0.05
"""The issue's target: the pyfunc layer costs under 5% of a direct call."""

EMPTY_MODEL = '''\
import mlflow
import pandas as pd


class Empty(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None):
        return model_input


mlflow.models.set_model(Empty())
'''


def frame(problems) -> pd.DataFrame:
    return pd.DataFrame({"question": [p.question for p in problems],
                         "trajectory": [p.branches.triples() for p in problems]})


def empty_model(folder: Path, beta: float):
    """The floor: a models-from-code pyfunc doing nothing, with the controller's signature."""
    import mlflow

    code = folder / "empty_model.py"
    code.write_text(EMPTY_MODEL)
    mlflow.pyfunc.save_model(path=str(folder / "empty"), python_model=str(code), signature=model_signature(beta),
                             input_example=input_example(), pip_requirements=["mlflow"])
    return mlflow.pyfunc.load_model(str(folder / "empty"))


def measure(problems, rounds: int, per_round, model, raw_model, floor, controller) -> dict[str, list[float]]:
    """Seconds per call at each level; ``per_round`` problems form one call."""
    times: dict[str, list[float]] = {k: [] for k in LEVELS}
    dfs = [frame(problems[k: k + per_round]) for k in range(0, len(problems), per_round)]
    triples = [[p.branches.triples() for p in problems[k: k + per_round]] for k in range(0, len(problems), per_round)]
    chunks = [problems[k: k + per_round] for k in range(0, len(problems), per_round)]
    solve = controller.solve
    for r in range(rounds):
        c = r % len(chunks)
        seed = r // len(chunks)
        chunk, df, tri = chunks[c], dfs[c], triples[c]
        params = {"shuffle_seed": seed}
        full = {"shuffle_seed": seed, "beta": controller.beta, "backend": "replay", "return_actions": False}

        t = time.perf_counter()
        for p in chunk:
            br = p.branches
            ep = ReplayEpisode(br, shuffle_order(br.n_branches, seed))
            solve(ep), ep.tokens_used, ep.branches_opened, ep.intervals
        times["direct"].append(time.perf_counter() - t)

        t = time.perf_counter()
        for p, tr in zip(chunk, tri):
            br = parse_trajectory(tr, p.question)
            ep = ReplayEpisode(br, shuffle_order(br.n_branches, seed))
            solve(ep), ep.tokens_used, ep.branches_opened, ep.intervals
        times["direct+parse"].append(time.perf_counter() - t)

        t = time.perf_counter()
        raw_model.predict(None, df, full)
        times["ControllerModel"].append(time.perf_counter() - t)

        t = time.perf_counter()
        model.predict(df, params=params)
        times["pyfunc"].append(time.perf_counter() - t)

        t = time.perf_counter()
        floor.predict(df, params=params)
        times["mlflow floor"].append(time.perf_counter() - t)
    return times


def report(title: str, times: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["direct"]
    print(f"\n{title} ({len(times['direct'])} calls; medians)")
    print(f"  {'level':16s} {'median':>12s} {'vs direct':>10s} {'median per-call ratio':>22s}")
    for level in LEVELS[:-1]:
        ratio = statistics.median(a / b for a, b in zip(times[level], times["direct"]))
        print(f"  {level:16s} {med[level] * 1e6:10.1f} µs {100 * (med[level] / base - 1):+9.1f}% {ratio:21.2f}x")
    over, floor = med["pyfunc"] - base, med["mlflow floor"]
    verdict = "met" if over <= TARGET * base else "not met"
    print(f"  pyfunc layer overhead: {over * 1e6:,.1f} µs = {100 * over / base:.1f}% of a direct call "
          f"(target < {100 * TARGET:.0f}%: {verdict})")
    print(f"    of which parsing the request's trajectories: {(med['direct+parse'] - base) * 1e6:,.1f} µs "
          f"= {100 * (med['direct+parse'] / base - 1):.1f}%")
    print(f"    MLflow's fixed floor (an empty pyfunc with this signature): {floor * 1e6:,.1f} µs "
          f"= {100 * floor / base:.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="autotts:Qwen3-1.7B/aime24")
    ap.add_argument("--controller", default="cmc")
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--calls", type=int, default=300, help="single-question calls")
    ap.add_argument("--batch-calls", type=int, default=40, help="whole-dataset calls")
    args = ap.parse_args()

    import mlflow

    (ts,) = load_datasets([args.data])
    spec = ControllerSpec(args.controller, args.beta)
    controller = spec.build()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_controller_model(spec, Path(tmp) / "model")
        model = mlflow.pyfunc.load_model(str(path))
        raw_model = model.unwrap_python_model()
        floor = empty_model(Path(tmp), args.beta)
        problems = ts.problems
        measure(problems, 2 * len(problems), 1, model, raw_model, floor, controller)  # warm-up (tables, caches)
        print(f"{spec.label} β={args.beta} on {ts.name}: pyfunc layer vs the bare controller")
        report("one question per call", measure(problems, args.calls, 1, model, raw_model, floor, controller))
        report(f"{len(problems)} questions per call", measure(problems, args.batch_calls, len(problems), model,
                                                             raw_model, floor, controller))


if __name__ == "__main__":
    main()
