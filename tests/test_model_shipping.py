"""Slim logged models: a model ships the import closure of what ``predict`` needs, and
that is enough to load and predict in a process where the repository is not importable."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from mlflow_autotts.controllers.base import build_controller
from mlflow_autotts.controllers.loading import ControllerSpec, split_source_ref
from mlflow_autotts.replay.episode import ReplayEpisode, shuffle_order
from mlflow_autotts.serving.model_config import model_config_for
from mlflow_autotts.serving.shipping import ENTRY_MODULE, code_roots
from mlflow_autotts.tracking.code_closure import PACKAGE_DIR, module_closure
from mlflow_autotts.tracking.model import save_controller_model, shipped_modules
from tests.helpers import import_source, random_set

MAX_CODE_BYTES = 132_000
"""A guard on the code a logged model carries besides its live part: 100 KB was the goal
before a model checked itself when it loads (its digest, ``serving/integrity.py``; the
operator's API-key allowlist, ``serving/live_policy.py``; built-ins only by registry name);
117 KB with those checks, which every served model needs; 127 KB with the one parser of the
published triple (``data/triples.py``) and the one billing rule (``replay/billing.py``); 129.2 KB
with the response columns declared once for the server and the signature (``serving/columns.py``)
and a runner's solve deadline."""
LIVE_PART = ("mlflow_autotts/live/", "mlflow_autotts/serving/live_mode.py", "mlflow_autotts/settings.py")
"""What answering question-only rows by generation adds (the live backend, its settings)."""
MAX_LIVE_BYTES = 160_000
"""A guard on that part: 81 KB when it landed, 93 KB with the confidence signals
(``live/signals.py``, 7 KB) and the backends' model check and engine description, 100.3 KB
with the CPU top-p (``live/backends/cpu_top_p.py``, ~6 KB: a served model's in-process
engine samples with it), 110.3 KB with the generation backends registered by name
(``plugins.Registry``), 116.6 KB with declared field bounds (``settings.bounded``, which
``LiveConfig`` now uses instead of hand-written range checks) and ``stored_live_config``;
127.7 KB with a request's limits in the live episode (token cap, deadline, cancel, the vote
of a stopped episode, the progress observer: what ``autotts serve`` needs of every episode);
153.0 KB with conversations through the chat template (``live/prompts.py``), engine calls
aborted on cancel, servers' health checks, several servers (``live/backends/replicas.py``) and
the episode's engine-call records (what a trace shows)."""
SET = random_set(n_problems=4, n_branches=16, seed=11)
SEED = 2

PROBE_TWO = '''\
from mlflow_autotts.controllers.base import Controller


class ProbeTwo(Controller):
    name = "probe_two"

    def solve(self, episode):
        answer, i, done = episode.probe_new()
        while not done:
            answer, done = episode.probe_more(i)
        return answer
'''

# Runs with -I -S: no PYTHONPATH, no user site, no .pth files (so not the editable install
# of the repository), only the venv's site-packages appended by hand.
ISOLATED = '''\
import importlib.util, json, sys
model, site, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.append(site)
assert importlib.util.find_spec("mlflow_autotts") is None, "the repository is importable"
import mlflow, pandas as pd
loaded = mlflow.pyfunc.load_model(model)
out = loaded.predict(pd.DataFrame(rows), params={"shuffle_seed": %d})
import mlflow_autotts
print(json.dumps({"rows": [[a, int(t), int(b), int(i)] for a, t, b, i in
                           zip(out["answer"], out["tokens"], out["branches_opened"], out["intervals"])],
                  "errors": [e for e in out["error"] if e is not None],
                  "package": mlflow_autotts.__file__,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "mlflow_autotts")}))
''' % SEED


def code_bytes(model_dir: Path) -> tuple[int, list[str]]:
    files = sorted(p for p in (model_dir / "code").rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in files), [str(p.relative_to(model_dir / "code")) for p in files]


def predict_isolated(model_dir: Path, tmp_path: Path) -> dict:
    rows = {"question": [p.question for p in SET.problems], "trajectory": [p.branches.triples() for p in SET.problems]}
    script = tmp_path / "isolated_predict.py"
    script.write_text(ISOLATED)
    site = sysconfig.get_paths()["purelib"]
    proc = subprocess.run([sys.executable, "-I", "-S", str(script), str(model_dir), site, json.dumps(rows)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def direct_rows(spec: ControllerSpec) -> list[list]:
    src = split_source_ref(spec.ref)  # this test's own source, imported here on purpose
    controller = spec.build() if src is None else build_controller(import_source(*src), spec.beta, spec.params)
    rows = []
    for p in SET.problems:
        ep = ReplayEpisode(p.branches, shuffle_order(p.branches.n_branches, SEED))
        answer = controller.solve(ep)
        rows.append([answer, ep.tokens_used, ep.branches_opened, ep.intervals])
    return rows


def module_files(modules: list[str]) -> list[str]:
    out = []
    for m in modules:
        parts = m.split(".")[1:]
        base = PACKAGE_DIR.joinpath(*parts)
        path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        out.append(str(path.relative_to(PACKAGE_DIR.parent)))
    return sorted(out)


def test_builtin_model_ships_under_100_kb_besides_live_generation_and_predicts_where_the_repository_is_not_importable(
        tmp_path):
    path = save_controller_model(ControllerSpec("cmc", 0.5), tmp_path / "model")
    size, files = code_bytes(path)
    whole = sum(p.stat().st_size for p in PACKAGE_DIR.rglob("*.py"))
    live = sum((path / "code" / f).stat().st_size for f in files if f.startswith(LIVE_PART))
    print(f"cmc model code: {len(files)} files, {size:,} bytes, {live:,} of them live generation "
          f"(the whole package: {whole:,} bytes)")
    assert size - live <= MAX_CODE_BYTES, files
    assert live <= MAX_LIVE_BYTES, files
    config, source = model_config_for(ControllerSpec("cmc", 0.5))
    assert files == module_files(shipped_modules(config, source.text))
    assert not any(f.startswith(("mlflow_autotts/tracking/", "mlflow_autotts/cli/", "mlflow_autotts/search/",
                                 "mlflow_autotts/sandbox/")) for f in files)

    got = predict_isolated(path, tmp_path)
    assert got["errors"] == [] and got["rows"] == direct_rows(ControllerSpec("cmc", 0.5))
    assert got["package"].startswith(str(path / "code" / "mlflow_autotts"))
    assert set(got["loaded"]) <= set(shipped_modules(config, source.text))


def test_candidate_model_ships_the_sandbox_worker_and_predicts_where_the_repository_is_not_importable(
        mlflow_store, tmp_path):
    import mlflow

    from mlflow_autotts.tracking.model import log_candidate_model

    with mlflow.start_run():
        info = log_candidate_model(PROBE_TWO, "ProbeTwo", "probe_two", 0.5)
    path = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model")))
    size, files = code_bytes(path)
    print(f"candidate model code: {len(files)} files, {size:,} bytes")
    assert "mlflow_autotts/sandbox/worker.py" in files  # started by name by the sandbox runner
    got = predict_isolated(path, tmp_path)
    trusted = tmp_path / "ProbeTwo.py"
    trusted.write_text(PROBE_TWO)
    assert got["errors"] == [] and got["rows"] == direct_rows(ControllerSpec(f"{trusted}:ProbeTwo"))


def test_closure_follows_every_import_form_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "mlflow_autotts"
    files = {
        "__init__.py": "",
        "a/__init__.py": "from mlflow_autotts.a import eager  # noqa\n",
        "a/eager.py": "",
        "a/entry.py": textwrap.dedent("""\
            from typing import TYPE_CHECKING
            from . import sibling
            from .deep.leaf import thing
            import mlflow_autotts.b.plain
            if TYPE_CHECKING:
                from mlflow_autotts.c import typing_only
            def later():
                from mlflow_autotts.b import inner_fn
            """),
        "a/sibling.py": "from ..b import relative_up\n",
        "a/deep/__init__.py": "",
        "a/deep/leaf.py": "thing = 1\n",
        "b/__init__.py": "",
        "b/plain.py": "",
        "b/inner_fn.py": "",
        "b/relative_up.py": "",
        "b/unused.py": "",
        "c/__init__.py": "",
        "c/typing_only.py": "",
        "d/__init__.py": "",
        "d/by_name.py": "",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    got = module_closure(["mlflow_autotts.a.entry", "mlflow_autotts.d.by_name"],
                         ["import mlflow_autotts.b.unused as u\n"], package_dir=pkg)
    assert got == sorted(["mlflow_autotts", "mlflow_autotts.a", "mlflow_autotts.a.eager", "mlflow_autotts.a.entry",
                          "mlflow_autotts.a.sibling", "mlflow_autotts.a.deep", "mlflow_autotts.a.deep.leaf",
                          "mlflow_autotts.b", "mlflow_autotts.b.plain", "mlflow_autotts.b.inner_fn",
                          "mlflow_autotts.b.relative_up", "mlflow_autotts.b.unused",
                          "mlflow_autotts.d", "mlflow_autotts.d.by_name"])
    with pytest.raises(ValueError, match="is not a module of mlflow_autotts"):
        module_closure(["mlflow_autotts.nope"], package_dir=pkg)


def test_the_serving_closure_never_reaches_tracking_and_builtins_do_not_carry_the_sandbox():
    builtin, _ = model_config_for(ControllerSpec("sc"))
    serving = module_closure([ENTRY_MODULE])
    assert not [m for m in serving if m.split(".")[1:2] in (["tracking"], ["cli"], ["search"], ["sandbox"])]
    assert "mlflow_autotts.data.json_io" not in serving and "mlflow_autotts.data.uris" not in serving
    assert module_closure(code_roots(builtin)) == serving
    candidate = {**builtin, "registry_name": None}
    assert "mlflow_autotts.sandbox.worker" in module_closure(code_roots(candidate))


def test_data_package_names_still_import_from_the_package():
    from mlflow_autotts.data import Branches, load_datasets, read_json, write_parquet
    from mlflow_autotts.data.json_io import read_json as direct

    assert read_json is direct and callable(load_datasets) and callable(write_parquet) and Branches.__name__
    with pytest.raises(ImportError):
        from mlflow_autotts.data import no_such_name  # noqa: F401
