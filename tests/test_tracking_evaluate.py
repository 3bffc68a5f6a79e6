"""MLflow logging of ``autotts evaluate`` results, against a real sqlite store."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from mlflow_autotts.replay.report import EvaluationReport, token_reduction
from mlflow_autotts.replay.results import EvalResult
from mlflow_autotts.replay.runner import EPISODE_COLUMNS
from mlflow_autotts.tracking import naming, plots
from mlflow_autotts.tracking.evaluate_run import EPISODES_FILE, PLOT_FILE, RESULTS_TABLE, log_evaluation

D4, D8 = "Qwen3-4B/aime24", "Qwen3-8B/aime24"


def _episodes(data: str, n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = [(data, p, s, str(rng.randint(0, 9)) if rng.random() > 0.1 else None, rng.random() < 0.5,
             rng.randint(100, 9000), rng.randint(1, 64), rng.randint(1, 80)) for s in range(2) for p in range(n)]
    return pd.DataFrame(rows, columns=list(EPISODE_COLUMNS))


def _result(data: str, controller: str, beta: float | None, seed: int, params: dict | None = None) -> EvalResult:
    rng = random.Random(seed)
    eps = _episodes(data, 3, seed)
    return EvalResult(data=data, controller=controller, beta=beta, params=params or {}, shuffles=2, n_problems=3,
                      accuracy=rng.uniform(20, 90), mean_tokens=rng.uniform(1e3, 3e5), episodes=eps)


def _sweep_report(betas=(0.5, 1.0, 0.25)) -> EvaluationReport:
    """cmc at several β (deliberately unsorted) on two datasets, with SC@64 and asc."""
    results = [_result(d, "cmc", b, seed=10 * i + j) for i, b in enumerate(betas) for j, d in enumerate((D4, D8))]
    sc64 = {d: _result(d, "sc", None, seed=100 + j, params={"n": 64}) for j, d in enumerate((D4, D8))}
    refs = [_result(d, "asc", None, seed=200 + j, params={"max_samples": 64, "threshold": 0.95})
            for j, d in enumerate((D4, D8))]
    return EvaluationReport(results, sc64, refs)


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _download(client, run_id: str, name: str, dst: Path) -> Path:
    return Path(client.download_artifacts(run_id, name, str(dst)))


# ---------------------------------------------------------------------------- naming
def test_metric_names_are_valid_unique_and_dotted():
    from mlflow.utils.validation import _validate_metric_name

    assert naming.dataset_key(D4) == "Qwen3-4B.aime24"
    assert naming.metric_key("accuracy", "Qwen3-4B.aime24", 0.5) == "accuracy.Qwen3-4B.aime24.beta_0.5"
    assert naming.beta_label(1) == naming.beta_label(1.0) == "beta_1.0"
    names = ["/tmp/x/my data (v2).json", "a/b", "a.b", "mean", "../..", "é/ü", "x" * 400]
    keys = naming.dataset_keys(names)
    assert len(set(keys.values())) == len(names)
    assert keys["mean"] != naming.MEAN_KEY
    assert keys["/tmp/x/my data (v2).json"] == "tmp.x.my data _v2_.json"
    for k in keys.values():
        _validate_metric_name(naming.metric_key("token_reduction_vs_sc64", k, 0.123456789))
        assert len(naming.metric_key("token_reduction_vs_sc64", k, 0.123456789)) <= 250


# ---------------------------------------------------------------------------- logging
def test_sweep_logs_params_metrics_tables_and_plot(mlflow_store, tmp_path):
    report = _sweep_report()
    run_id = log_evaluation(report, params={"workers": 1}, tags={"purpose": "test"})
    client = _client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "autotts-evaluate"  # one experiment per kind of work
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.info.run_name == "evaluate-cmc-aime24"  # what the run did, not random words
    assert run.data.params == {"controller": "cmc", "beta": "0.25,0.5,1.0", "shuffles": "2",
                               "data": f"{D4},{D8}", "workers": "1"}
    assert run.data.tags["purpose"] == "test" and run.data.tags["autotts.command"] == "evaluate"

    betas = sorted(report.betas)
    metrics = run.data.metrics
    for data in (D4, D8):
        key = naming.dataset_key(data)
        by_beta = {r.beta: r for r in report.results if r.data == data}
        base = report.sc64[data]
        for m in ("accuracy", "mean_tokens", "token_reduction_vs_sc64"):
            hist = sorted(client.get_metric_history(run_id, f"{m}.{key}"), key=lambda x: x.step)
            expected = [getattr(by_beta[b], m) if m != "token_reduction_vs_sc64" else token_reduction(by_beta[b], base)
                        for b in betas]
            assert [h.step for h in hist] == list(range(len(betas)))
            assert [h.value for h in hist] == pytest.approx(expected, rel=1e-12)
            for b, v in zip(betas, expected):
                assert metrics[f"{m}.{key}.beta_{b!r}"] == pytest.approx(v, rel=1e-12)
    for i, b in enumerate(betas):
        rs = [r for r in report.results if r.beta == b]
        acc = sum(r.accuracy for r in rs) / len(rs)
        red = sum(token_reduction(r, report.sc64[r.data]) for r in rs) / len(rs)
        hist = {h.step: h.value for h in client.get_metric_history(run_id, "accuracy.mean")}
        assert hist[i] == pytest.approx(acc, rel=1e-12)
        assert metrics[f"token_reduction_vs_sc64.mean.beta_{b!r}"] == pytest.approx(red, rel=1e-12)
    assert [h.value for h in sorted(client.get_metric_history(run_id, "beta"), key=lambda x: x.step)] == betas

    files = {f.path for f in client.list_artifacts(run_id)}
    assert {RESULTS_TABLE, EPISODES_FILE, PLOT_FILE} <= files

    table = json.loads(_download(client, run_id, RESULTS_TABLE, tmp_path).read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [r["role"] for r in rows] == ["evaluated"] * 6 + ["sc64"] * 2 + ["reference"] * 2
    for row, r in zip(rows, [*report.results, *report.sc64.values(), *report.references]):
        assert (row["data"], row["controller"], row["beta"]) == (r.data, r.controller, r.beta)
        assert row["accuracy"] == pytest.approx(r.accuracy) and row["mean_tokens"] == pytest.approx(r.mean_tokens)
        assert row["token_reduction_vs_sc64"] == pytest.approx(token_reduction(r, report.sc64[r.data]))
    assert len(client.load_table(run.info.experiment_id, RESULTS_TABLE, run_ids=[run_id])) == 10

    eps = pd.read_parquet(_download(client, run_id, EPISODES_FILE, tmp_path))
    assert list(eps.columns) == ["role", "controller", "beta", *EPISODE_COLUMNS]
    every = [*report.results, *report.sc64.values(), *report.references]
    assert len(eps) == sum(len(r.episodes) for r in every)
    first = eps[(eps.controller == "cmc") & (eps.beta == 0.25) & (eps.dataset == D8)]
    first = first.drop(columns=["role", "controller", "beta"])
    src = next(r for r in report.results if r.beta == 0.25 and r.data == D8).episodes
    pd.testing.assert_frame_equal(first.reset_index(drop=True), src.reset_index(drop=True))
    assert eps[eps.role == "sc64"].beta.isna().all()

    png = _download(client, run_id, PLOT_FILE, tmp_path)
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[0] >= 400 and img.shape[1] >= 700


def test_beta_free_controller_has_no_beta_metrics_and_no_plot(mlflow_store):
    sc = {d: _result(d, "sc", None, seed=j, params={"n": 64}) for j, d in enumerate((D4, D8))}
    esc = [_result(d, "esc", None, seed=5 + j, params={"window": 8}) for j, d in enumerate((D4, D8))]
    report = EvaluationReport(esc, sc)
    run_id = log_evaluation(report, experiment="other", run_name="esc-only")
    client = _client()
    run = client.get_run(run_id)
    assert run.info.run_name == "esc-only"
    assert client.get_experiment(run.info.experiment_id).name == "other"
    assert "beta" not in run.data.params and run.data.params["controller.window"] == "8"
    assert not any("beta" in k for k in run.data.metrics)
    expected = {f"{m}.{naming.dataset_key(r.data)}": v for r in report.results
                for m, v in (("accuracy", r.accuracy), ("mean_tokens", r.mean_tokens),
                             ("token_reduction_vs_sc64", token_reduction(r, sc[r.data])))}
    expected |= {f"{m}.mean": sum(expected[f"{m}.{naming.dataset_key(d)}"] for d in (D4, D8)) / 2
                 for m in ("accuracy", "mean_tokens", "token_reduction_vs_sc64")}
    assert run.data.metrics == pytest.approx(expected, rel=1e-12)
    assert PLOT_FILE not in {f.path for f in client.list_artifacts(run_id)}


def test_logs_into_an_already_active_run(mlflow_store):
    import mlflow

    report = _sweep_report(betas=(0.5,))
    with mlflow.start_run(run_name="outer") as outer:
        run_id = log_evaluation(report, run_name="renamed")
        assert run_id == outer.info.run_id
        assert mlflow.active_run().info.run_id == run_id  # left active for the caller
        mlflow.log_metric("after", 1.0)
    client = _client()
    run = client.get_run(run_id)
    assert run.info.run_name == "renamed" and run.data.metrics["after"] == 1.0
    assert run.data.metrics[f"accuracy.{naming.dataset_key(D4)}.beta_0.5"] == pytest.approx(
        next(r.accuracy for r in report.results if r.data == D4))
    assert client.get_experiment_by_name("autotts-evaluate") is None  # no new run anywhere else
    assert len(client.search_runs([run.info.experiment_id])) == 1
    with mlflow.start_run(run_name="outer") as outer:  # the caller's run keeps the caller's name
        log_evaluation(report)
    assert client.get_run(outer.info.run_id).info.run_name == "outer"


def test_resumes_the_mlflow_run_id_run_and_keeps_its_project_params(mlflow_store, monkeypatch):
    """As under ``mlflow run``: the run exists, carries the -P values, and its id is in the env."""
    client = _client()
    exp = client.create_experiment("project")
    run = client.create_run(exp)
    client.log_param(run.info.run_id, "data", "autotts:Qwen3-4B/aime24 autotts:Qwen3-8B/aime24")
    client.log_param(run.info.run_id, "controller", "cmc")
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    assert log_evaluation(_sweep_report(betas=(0.25, 0.75))) == run.info.run_id
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["data"] == "autotts:Qwen3-4B/aime24 autotts:Qwen3-8B/aime24"
    assert got.data.params["data.resolved"] == f"{D4},{D8}"
    assert got.data.params["controller"] == "cmc" and "controller.resolved" not in got.data.params
    assert got.info.run_name == "evaluate-cmc-aime24"  # the name MLflow made up is replaced
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment_by_name("autotts-evaluate") is None
    assert len(client.search_runs([exp])) == 1

    named = client.create_run(exp, run_name="my-sweep")  # as `mlflow run --run-name my-sweep`
    monkeypatch.setenv("MLFLOW_RUN_ID", named.info.run_id)
    log_evaluation(_sweep_report(betas=(0.25,)))
    assert client.get_run(named.info.run_id).info.run_name == "my-sweep"


def test_bad_reports_are_rejected_before_any_run(mlflow_store):
    r = _result(D4, "cmc", 0.5, seed=1)
    for report, msg in ((EvaluationReport([]), "no results"),
                        (EvaluationReport([r, _result(D4, "cmc", 0.5, seed=2)]), "two results"),
                        (EvaluationReport([r, _result(D8, "asc", None, seed=3)]), "one evaluated controller")):
        with pytest.raises(ValueError, match=msg):
            log_evaluation(report)
    assert _client().get_experiment_by_name("autotts-evaluate") is None


def test_a_failure_while_logging_marks_the_run_failed(mlflow_store, monkeypatch):
    def broken(report):
        raise RuntimeError("plot exploded")

    monkeypatch.setattr(plots, "accuracy_tokens_figure", broken)
    with pytest.raises(RuntimeError, match="plot exploded"):
        log_evaluation(_sweep_report())
    import mlflow

    assert mlflow.active_run() is None
    client = _client()
    (run,) = client.search_runs([client.get_experiment_by_name("autotts-evaluate").experiment_id])
    assert run.info.status == "FAILED"


def test_real_replay_evaluation_logged(mlflow_store, tmp_path):
    from mlflow_autotts.controllers.loading import ControllerSpec
    from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet
    from mlflow_autotts.replay.runner import ReplayConfig, evaluate_many

    rng = random.Random(7)
    problems = []
    for q in range(4):
        gold = str(q)
        finals = [gold if rng.random() < 0.6 else str(rng.randint(10, 12)) for _ in range(64)]
        probes = [[rng.choice([f, "ERR"]) for _ in range(rng.randint(1, 5))] for f in finals]
        tokens = [500 * len(p) - rng.randint(0, 400) for p in probes]
        problems.append(Problem(Branches.from_lists(f"q{q}", 500, probes, tokens, finals), gold))
    ts = TrajectorySet(problems, Provenance(model="Tiny", benchmark="synth"))
    config = ReplayConfig(shuffles=3, workers=1, progress=False)
    specs = [ControllerSpec("cmc", 0.5), ControllerSpec("cmc", 1.0), ControllerSpec("sc")]
    cmc5, cmc1, sc = evaluate_many(specs, [ts], config)
    report = EvaluationReport([cmc5, cmc1], {ts.name: sc})
    run_id = log_evaluation(report)

    client = _client()
    run = client.get_run(run_id)
    assert run.data.params["controller"] == "cmc" and run.data.params["beta"] == "0.5,1.0"
    assert run.data.params["data"] == "Tiny/synth" and run.data.params["shuffles"] == "3"
    for r in (cmc5, cmc1):
        assert run.data.metrics[f"accuracy.Tiny.synth.beta_{r.beta!r}"] == pytest.approx(r.accuracy, rel=1e-12)
        assert run.data.metrics[f"mean_tokens.Tiny.synth.beta_{r.beta!r}"] == pytest.approx(r.mean_tokens, rel=1e-12)
        assert run.data.metrics[f"token_reduction_vs_sc64.Tiny.synth.beta_{r.beta!r}"] == pytest.approx(
            100 * (1 - r.mean_tokens / sc.mean_tokens), rel=1e-12)
    eps = pd.read_parquet(_download(client, run_id, EPISODES_FILE, tmp_path))
    assert len(eps) == 3 * 3 * len(ts)
    cm = eps[(eps.controller == "cmc") & (eps.beta == 0.5)]
    assert 100 * cm.correct.mean() == pytest.approx(cmc5.accuracy)
    assert cm.tokens.mean() == pytest.approx(cmc5.mean_tokens)
    assert PLOT_FILE in {f.path for f in client.list_artifacts(run_id)}


def test_tradeoff_figure_is_general():
    curves = [plots.Curve("front", [(0, 10.0), (50, 40.0)], group="a", point_labels=["x", "y"])]
    points = [plots.Point("cand 1", 20, 30.0, group="b", kind="candidate"), plots.Point("cand 2", 30, 20.0, group="b")]
    fig = plots.tradeoff_figure(curves, points, title="pareto", log_x=True)
    (ax,) = fig.axes
    assert ax.get_xscale() == "linear"  # a zero x cannot go on a log axis
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["front", "candidate"]
    assert plots.tradeoff_figure([plots.Curve("c", [(10, 1.0), (1e4, 2.0)])]).axes[0].get_xscale() == "log"


def test_warm_up_opens_the_store_creates_nothing_and_never_raises(mlflow_store):
    import mlflow

    from mlflow_autotts.tracking.mlflow_utils import warm_up

    warm_up("warm")
    assert _client().get_experiment_by_name("warm") is None
    assert [e.name for e in _client().search_experiments()] == ["Default"]
    mlflow.set_tracking_uri("sqlite:////nonexistent-folder/x/mlflow.db")
    warm_up("warm")  # the logging that follows raises the error, where it belongs


def test_episodes_table_is_every_kept_table_with_its_role_controller_and_beta():
    from mlflow_autotts.tracking.evaluate_run import episodes_table

    report = _sweep_report()
    report.references[1].episodes = None  # a result without episodes adds no rows
    table = episodes_table(report)
    parts = []
    for role, r in [*[("evaluated", r) for r in report.results], *[("sc64", r) for r in report.sc64.values()],
                    ("reference", report.references[0])]:
        df = r.episodes.copy()
        df.insert(0, "beta", float("nan") if r.beta is None else float(r.beta))
        df.insert(0, "controller", r.controller)
        df.insert(0, "role", role)
        parts.append(df)
    pd.testing.assert_frame_equal(table, pd.concat(parts, ignore_index=True))
    assert episodes_table(EvaluationReport([_result(D4, "cmc", 0.5, 1)])).shape[0] == 6
    for r in report.results + list(report.sc64.values()) + report.references:
        r.episodes = None
    assert episodes_table(report) is None


def test_warm_up_queries_a_database_store_but_sends_no_request_to_a_server(mlflow_store, monkeypatch):
    import mlflow

    from mlflow_autotts.tracking.mlflow_utils import warm_up

    calls = []
    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", lambda self, name: calls.append(name))
    warm_up("x")
    assert calls == ["x"]  # the sqlite store's first query configures its mappers now
    mlflow.set_tracking_uri("http://127.0.0.1:9")  # nothing listens there
    warm_up("x")
    assert calls == ["x"]


def test_the_plot_names_sc_with_the_branches_each_dataset_has():
    """SC64 reads every branch a question has, at most 64: on a 16-branch collection the
    plot's point and legend say SC@16, on the published 128-branch sets SC@64."""
    from tests.helpers import random_set

    small, large = random_set(3, 16, seed=1, name="Synth/sixteen"), random_set(3, 70, seed=2, name="Synth/seventy")
    sc = {"n": 64}
    report = EvaluationReport(
        results=[EvalResult(ts.name, 0.5, 50.0, 100.0, "cmc") for ts in (small, large)],
        sc64={ts.name: EvalResult(ts.name, None, 60.0, 900.0, "sc", sc) for ts in (small, large)},
        references=[EvalResult(small.name, None, 55.0, 300.0, "asc")], trajectories=[small, large])
    fig = plots.accuracy_tokens_figure(report)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "sc@16" in legend and "sc@64" in legend and "asc" in legend
