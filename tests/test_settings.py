"""One settings dataclass per command: generated options, help from field docs, YAML, precedence."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from mlflow_autotts import settings
from mlflow_autotts.cli.common import AutoTTSGroup
from mlflow_autotts.cli.main import main
from mlflow_autotts.cli.options import option_decls, settings_options
from mlflow_autotts.cli.model_registry import PromoteConfig, RegisterConfig
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.evaluation import EvaluateConfig
from mlflow_autotts.search.config import SearchConfig
from mlflow_autotts.serving.endpoint.config import ServeConfig

COMMANDS = {"search": SearchConfig, "evaluate": EvaluateConfig, "register": RegisterConfig, "promote": PromoteConfig,
            "serve": ServeConfig}
FLAGS = {"evaluate": {"params": "--param", "controller": "--controller"},
         "register": {"params": "--param", "aliases": "--alias"},
         "promote": {"from_alias": "--from", "to_alias": "--to"},
         "serve": {"host": ("--host", "-h"), "port": ("--port", "-p")}}
ARGUMENTS = {"evaluate": {"data"}, "register": {"controller"}, "serve": {"model_uri"}}


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def effective(*args: str) -> dict[str, Any]:
    """The settings a command line resolves to, read back from --print-config."""
    r = run(*args, "--print-config")
    assert r.exit_code == 0, r.output
    return yaml.safe_load(r.stdout)


def one_line_error(r) -> str:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.mark.parametrize("cls", COMMANDS.values(), ids=COMMANDS.keys())
def test_every_settings_field_has_a_docstring(cls):
    docs = settings.field_docs(cls)
    undocumented = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name, "").strip()]
    assert undocumented == []
    assert dataclasses.fields(cls) and cls.__dataclass_params__.frozen


@pytest.mark.parametrize("command", COMMANDS)
def test_help_documents_every_field_with_its_docstring(command):
    cls = COMMANDS[command]
    text = " ".join(run(command, "--help").stdout.split())
    for s in settings.describe(cls):
        if s.name in ARGUMENTS.get(command, ()):
            assert s.name.upper() in text
            continue
        decl = option_decls(s, FLAGS.get(command, {}))[0].replace("/", " / ")  # bools: --x / --no-x
        assert decl in text, (s.name, decl)
        assert s.help.replace("``", "") in text, s.name
    assert "--config FILE.yaml" in text and "--print-config" in text


def test_search_help_lists_one_option_per_field_and_nothing_undocumented():
    ctx = click.Context(main.commands["search"])
    params = {p.name: p for p in main.commands["search"].get_params(ctx)}
    assert {s.name for s in settings.describe(SearchConfig)} <= set(params)
    assert all(p.help for p in params.values() if isinstance(p, click.Option) and not p.hidden)


def test_option_kinds_follow_the_annotations():
    # lists: repeated and/or comma-separated, the same either way
    assert effective("search", "--data", "a.json,b.json", "--data", "c.json")["data"] == effective(
        "search", "--data", "a.json", "--data", "b.json,c.json")["data"] == ["a.json", "b.json", "c.json"]
    got = effective("search", "--betas", "0,0.5", "--betas", "1", "--no-log-models", "--budget-usd", "3")
    assert got["betas"] == [0.0, 0.5, 1.0] and got["log_models"] is False and got["budget_usd"] == 3.0
    assert got["budget_tokens"] is None  # Optional and not given: stays None
    got = effective("evaluate", "x.json", "y.json", "-c", "sc", "--param", "n=8", "--param", "tag=fast",
                    "--beta", "0.25,0.75")
    assert got["data"] == ["x.json", "y.json"] and got["params"] == {"n": 8, "tag": "fast"}
    assert got["beta"] == [0.25, 0.75]


def test_precedence_defaults_then_file_then_options_given(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("max_candidates: 7\nworkers: 3\nlog_models: false\nexplorer: openai:some-model\n")
    got = effective("search", "--config", str(f), "--max-candidates", "9")
    assert (got["max_candidates"], got["workers"], got["log_models"], got["explorer"]) == (9, 3, False,
                                                                                          "openai:some-model")
    assert got["population"] == SearchConfig().budget.population  # neither file nor option: the default
    # an option given with its default value still beats the file
    got = effective("search", "--config", str(f), "--workers", str(SearchConfig().workers), "--log-models")
    assert got["workers"] == SearchConfig().workers and got["log_models"] is True


def test_set_passes_values_by_field_name_and_empty_means_not_given(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("max_candidates: 7\nexplorer: openai:some-model\n")
    got = effective("search", "--config", str(f), "--set", "explorer=", "--set", "max_candidates=3",
                    "--set", "log_models=false", "--set", "betas=0,1")
    assert (got["explorer"], got["max_candidates"], got["log_models"], got["betas"]) == (
        "openai:some-model", 3, False, [0.0, 1.0])
    assert effective("search", "--set", "max_candidates=3", "--max-candidates", "4")["max_candidates"] == 4
    assert "unknown setting 'bogus'; valid: alias, allow_weaker_isolation, betas" in one_line_error(run("search", "--set", "bogus=1"))


def test_print_config_output_is_a_valid_config_file(tmp_path):
    first = effective("search", "--explorer", "openai:m", "--budget-usd", "2", "--validation", "v.json")
    f = tmp_path / "round.yaml"
    f.write_text(yaml.safe_dump(first))
    assert effective("search", "--config", str(f)) == first
    assert settings.build(SearchConfig, f) == settings.build(SearchConfig, None, first)


@pytest.mark.parametrize("text, message", [
    ("bogus: 1\nmax_candidates: 2\n", "unknown setting(s) bogus; valid: alias, allow_weaker_isolation, betas, bootstrap_resamples"),
    ("max_candidates: many\n", "invalid max_candidates 'many': expected an integer"),
    ("log_models: maybe\n", "invalid log_models 'maybe': expected true or false"),
    ("betas: [0, high]\n", "invalid betas 'high': expected a number"),
    ("data: 3\n", "invalid data 3: expected a list of strings"),
    ("seed:\n", "invalid seed None: expected an integer"),
])
def test_bad_config_file_is_one_line_naming_file_and_field(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    line = one_line_error(run("search", "--config", str(f)))
    assert str(f) in line and message in line


@pytest.mark.parametrize("args, message", [
    (["search", "--max-candidates", "x"], "search config: invalid max_candidates 'x': expected an integer"),
    (["search", "--max-candidates", "0"], "max_candidates must be >= 1"),
    (["evaluate", "x.json", "-c", "sc", "--shuffles", "0"], "shuffles must be >= 1"),
    (["evaluate", "x.json", "-c", "sc", "--param", "n"], "invalid params 'n': expected key=value"),
    (["evaluate", "-c", "sc"], "missing DATA"),
    (["evaluate", "x.json"], "missing --controller"),
    (["promote"], "missing --gate"),
    (["register"], "missing CONTROLLER"),
    (["register", "cmc", "--beta", "2"], "invalid beta 2.0"),
])
def test_bad_command_line_values_are_one_line_errors(args, message):
    assert message in one_line_error(run(*args, "--print-config"))


def test_evaluate_takes_everything_from_a_config_file(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("data: [a.json]\ncontroller: asc\nbeta: [0.5]\nparams: {max_samples: 8}\nmlflow: false\n")
    got = effective("evaluate", "--config", str(f), "b.json", "--shuffles", "5")
    assert (got["data"], got["controller"], got["params"], got["mlflow"], got["shuffles"]) == (
        ["b.json"], "asc", {"max_samples": 8}, False, 5)


# --------------------------------------------------------------- the machinery on its own
@dataclass(frozen=True)
class Toy:
    """Every kind the generator supports."""

    name: str
    """A required string."""
    count: int = 2
    """An integer."""
    ratio: float | None = None
    """An optional float."""
    sizes: tuple[int, ...] = (1, 2)
    """Integers, as a list."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Name/value pairs."""
    loud: bool = False
    """A switch."""


@click.group(cls=AutoTTSGroup)
def toy_cli() -> None:
    pass


@toy_cli.command("toy")
@settings_options(Toy, arguments=("name",))
@click.option("--times", default=1, show_default=True, help="A command's own option, next to the settings.")
def toy_cmd(config: Toy, times: int) -> None:
    click.echo(repr((config, times)))


def test_generated_command_builds_the_dataclass_and_keeps_its_own_options():
    r = CliRunner().invoke(toy_cli, ["toy", "n", "--count", "5", "--ratio", "0.5", "--sizes", "3,4", "--extra",
                                     "a=1", "--loud", "--times", "2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == repr((Toy("n", 5, 0.5, (3, 4), {"a": 1}, True), 2))
    help_text = CliRunner().invoke(toy_cli, ["toy", "--help"]).stdout
    assert "--loud / --no-loud" in help_text and "--sizes INTEGER[,…]" in help_text and "--extra KEY=VALUE" in help_text
    assert "Integers, as a list. Repeatable or comma-separated. [default: 1, 2]" in " ".join(help_text.split())


def test_unsupported_annotations_and_undocumented_fields_are_declaration_errors():
    @dataclass(frozen=True)
    class Bad:
        when: list[str] = field(default_factory=list)
        """A list is not a frozen value: use tuple[str, ...]."""

    @dataclass(frozen=True)
    class Silent:
        size: int = 1

    with pytest.raises(TypeError, match="setting when: unsupported type"):
        settings.describe(Bad)
    with pytest.raises(TypeError, match="setting Silent.size has no docstring"):
        settings.describe(Silent)


def test_coerce_reads_mlproject_strings_like_yaml_values():
    assert settings.coerce(SearchConfig, "time_budget_minutes", "20") == 20.0
    assert settings.coerce(SearchConfig, "max_candidates", 48.0) == 48
    assert settings.coerce(SearchConfig, "log_models", "False") is False
    assert settings.coerce(SearchConfig, "budget_usd", None) is None
    assert settings.coerce(EvaluateConfig, "params", "n=3,name=x") == {"n": 3, "name": "x"}
    with pytest.raises(AutoTTSError, match="invalid max_candidates True: expected an integer"):
        settings.coerce(SearchConfig, "max_candidates", True)


# ---------------------------------------------------------------- parts and declared bounds
@dataclass(frozen=True)
class Engine:
    model: str
    """The model."""
    temperature: float = settings.bounded(0.7, ge=0.0, le=2.0)
    """Sampling temperature."""

    def __post_init__(self) -> None:
        settings.check_bounds(self)


@dataclass(frozen=True)
class Job:
    engine: Engine
    """What generates (a part: its fields are offered flat)."""
    shards: int = settings.bounded(1, ge=1)
    """Output shards."""
    betas: tuple[float, ...] = settings.bounded((0.5,), ge=0.0, le=1.0)
    """β values."""
    mode: str = settings.bounded("fast", choices=("fast", "slow"))
    """How."""

    def __post_init__(self) -> None:
        settings.check_bounds(self)


def test_a_part_is_offered_flat_and_assembled_once(tmp_path):
    assert [(s.name, s.path) for s in settings.describe(Job)] == [
        ("model", ("engine",)), ("temperature", ("engine",)), ("shards", ()), ("betas", ()), ("mode", ())]
    f = tmp_path / "job.yaml"
    f.write_text("model: m\ntemperature: 0.1\n")
    job = settings.build(Job, f, {"shards": "3"})
    assert job == Job(Engine("m", 0.1), shards=3)
    assert settings.value(job, "temperature") == 0.1 and settings.to_dict(job)["model"] == "m"
    assert settings.build(Job, None, settings.to_dict(job)) == job  # round trip through the flat form
    with pytest.raises(settings.MissingSettings, match="job: missing model"):
        settings.build(Job, None, {"shards": 2})


def test_a_name_declared_twice_in_the_tree_is_a_declaration_bug():
    @dataclass(frozen=True)
    class Twice:
        engine: Engine
        """A part."""
        model: str = "x"
        """Clashes with the part's."""

    with pytest.raises(TypeError, match="'model' is declared twice"):
        settings.describe(Twice)


@pytest.mark.parametrize("given, message", [
    ({"shards": 0}, "job: shards must be >= 1, got 0"),
    ({"betas": (0.5, 1.5)}, r"job: betas must be <= 1, got \(0.5, 1.5\)"),
    ({"mode": "medium"}, "job: mode must be one of fast, slow, got 'medium'"),
    ({"temperature": -1.0}, "^engine: temperature must be >= 0, got -1.0$"),
    ({"temperature": float("nan")}, "temperature must be a number, got nan"),
])
def test_declared_bounds_refuse_with_one_message_shape(given, message):
    with pytest.raises(AutoTTSError, match=message):
        settings.build(Job, None, {"model": "m", **given})
