"""Serving a sandboxed candidate: replay requests through ``mlflow models serve``, latency per
request (p50, p95) one at a time and eight at a time, each request at its own β.

    AUTOTTS_DATA_DIR=../shared/data/autotts-replay python benchmarks/served_sandbox.py [--baseline REV]

The candidate is the CMC reference controller's source, registered as a file (so it is
served from the sandbox, not in process); each request is one published AIME 2024 question
(Qwen3-4B) with its 128 branches, a new shuffle seed and one of 16 β values. ``--baseline
REV`` runs the same at git revision REV first and prints both side by side.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from revisions import add_options, measure_both

from mlflow_autotts.controllers import cmc
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.uris import load_datasets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import served_model  # noqa: E402  (the tests' server lifecycle, reused)

BETAS = [k / 15 for k in range(16)]


def measure(requests_n: int) -> dict[str, float]:
    import mlflow

    try:
        from mlflow_autotts.tracking.model_registry import register
    except ImportError:  # a --baseline from before the module's rename
        from mlflow_autotts.tracking.registry import register

    ts = load_datasets(["autotts:Qwen3-4B/aime24"])[0]
    rows = []
    for p in ts.problems:
        br = p.branches
        rows.append([br.question, [[list(br.probe_answers[br.probe_offsets[b]:br.probe_offsets[b + 1]]),
                                    int(br.branch_tokens[b]), br.final_answers[b]] for b in range(br.n_branches)]])
    tmp = Path(tempfile.mkdtemp(prefix="autotts-bench-"))
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    source = tmp / "cmc_as_a_file.py"
    source.write_text(inspect.getsource(cmc).replace("@register_controller\n", ""))
    register(ControllerSpec(str(source), 0.5), aliases=["champion"])
    out: dict[str, float] = {}
    with served_model("models:/autotts-controller@champion", tmp,
                      {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}) as url:

        def ask(k: int) -> float:
            body = {"dataframe_split": {"columns": ["question", "trajectory"], "data": [rows[k % len(rows)]]},
                    "params": {"beta": BETAS[k % len(BETAS)], "shuffle_seed": k}}
            t = time.perf_counter()
            r = requests.post(f"{url}/invocations", json=body, timeout=300)
            dt = time.perf_counter() - t
            r.raise_for_status()
            assert r.json()["predictions"][0]["error"] is None, r.text[:300]
            return dt

        for k in range(4):  # warm the children
            ask(k)
        for width in (1, 8):
            with ThreadPoolExecutor(width) as pool:
                times = sorted(pool.map(ask, range(requests_n)))
            out[f"p50_{width}"] = statistics.median(times)
            out[f"p95_{width}"] = times[int(0.95 * (len(times) - 1))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=64)
    add_options(ap)
    args = ap.parse_args()
    both = measure_both(args, "benchmarks/served_sandbox.py", ["--requests", str(args.requests)],
                        lambda: measure(args.requests))
    if both is None:
        return
    now, base = both
    print(f"{args.requests} replay requests (one question, 128 branches, own β and seed), sandboxed CMC source")
    print(f"{'at once':>8} {'p50 ms':>8} {'p95 ms':>8}" + (f" {'base p50':>9} {'base p95':>9} {'p50 ratio':>10}"
                                                          if base else ""))
    for w in (1, 8):
        row = f"{w:>8} {1000 * now[f'p50_{w}']:>8.1f} {1000 * now[f'p95_{w}']:>8.1f}"
        if base:
            row += (f" {1000 * base[f'p50_{w}']:>9.1f} {1000 * base[f'p95_{w}']:>9.1f}"
                    f" {now[f'p50_{w}'] / base[f'p50_{w}']:>9.2f}x")
        print(row)


if __name__ == "__main__":
    main()
