"""One trust boundary everywhere: a controller that rewrites its own bill is reported at
its honest cost by every command that reports numbers about it (``docs/architecture.md``,
"The trust boundary"): ``autotts evaluate`` from a source file and from a registered model,
and ``autotts promote``'s gate."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from mlflow_autotts.cli.main import main
from mlflow_autotts.data import write_json
from tests.helpers import random_set

READ_WHOLE = """
from mlflow_autotts.controllers.base import Controller
from mlflow_autotts.controllers.voting import plurality


class {cls}(Controller):
    name = "{name}"
    uses_beta = False

    def solve(self, episode):
        answers = [episode.get_new_branch_final_answer() for _ in range(8)]
        {rewrite}
        return plurality(answers)
"""

REWRITE = textwrap.dedent("""
    # every way this process's bookkeeping can be reached from the episode
    for attr, value in (("_btok", (0,) * 1000), ("_read", set()), ("_opened", 0), ("_tokens", 0)):
        try:
            setattr(episode, attr, value)
        except Exception:
            pass
    try:
        type(episode).tokens_used = property(lambda self: 0)
    except Exception:
        pass
""").strip().replace("\n", "\n        ")


@pytest.fixture
def controllers(tmp_path):
    honest = tmp_path / "honest.py"
    honest.write_text(READ_WHOLE.format(cls="Honest", name="honest_reader", rewrite="pass"))
    hostile = tmp_path / "hostile.py"
    hostile.write_text(READ_WHOLE.format(cls="BillRewriter", name="bill_rewriter", rewrite=REWRITE))
    data = tmp_path / "synth.json"
    write_json(random_set(n_problems=5, n_branches=16, seed=3, name="Synth/trust"), data)
    return honest, hostile, data


def _evaluate(data, controller, tmp_path, name) -> dict:
    out = tmp_path / f"{name}.json"
    res = CliRunner().invoke(main, ["evaluate", str(data), "-c", str(controller), "--shuffles", "4", "--workers", "1",
                                    "--no-mlflow", "--no-progress", "--output-json", str(out)])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(out.read_text())["results"]
    return row


def test_evaluate_reports_a_bill_rewriting_source_file_at_its_honest_cost(controllers, tmp_path):
    honest, hostile, data = controllers
    fair = _evaluate(data, honest, tmp_path, "honest")
    forged = _evaluate(data, hostile, tmp_path, "hostile")
    assert fair["mean_tokens"] > 0
    assert forged["mean_tokens"] == fair["mean_tokens"]
    assert forged["accuracy"] == fair["accuracy"]


@pytest.mark.slow
def test_registered_bill_rewriter_is_evaluated_and_gated_at_its_honest_cost(controllers, tmp_path, mlflow_store):
    honest, hostile, data = controllers
    fair = _evaluate(data, honest, tmp_path, "honest")
    runner = CliRunner()
    for ref, alias in ((honest, "champion"), (hostile, "challenger")):
        res = runner.invoke(main, ["register", str(ref), "--name", "trust", "--alias", alias])
        assert res.exit_code == 0, res.output
    forged = _evaluate(data, "models:/trust@challenger", tmp_path, "registered")
    assert forged["mean_tokens"] == fair["mean_tokens"]

    res = runner.invoke(main, ["promote", "--name", "trust", "--gate", str(data), "--shuffles", "4", "--workers", "1",
                               "--no-progress"])
    assert res.exit_code in (0, 1), res.output
    from mlflow import MlflowClient

    c = MlflowClient()
    version = c.get_model_version_by_alias("trust", "challenger")
    (gate_run,) = c.search_runs([c.get_experiment_by_name("autotts-gate").experiment_id])
    assert gate_run.data.params["candidate"] == f"v{version.version}"
    gated = gate_run.data.metrics["candidate.mean_tokens.mean"]  # the gate's full number (the tag is rounded)
    assert gated == pytest.approx(fair["mean_tokens"], rel=1e-6)
