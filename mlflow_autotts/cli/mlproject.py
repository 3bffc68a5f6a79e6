"""The ``MLproject`` file, generated from the settings dataclasses.

Each entry point takes ``config`` (a YAML file, defaulting to a project recipe) and one
parameter per exposed settings field, named after the field and defaulting to "" (MLflow
needs a default for an optional parameter). The command passes every field as the hidden
``--set NAME={NAME}`` option, where an empty value means "not given" (``cli/options.py``):
so only what the user passes with ``-P`` reaches the command, and a ``-P config=FILE.yaml``
is never overridden by an MLproject default.

``python -m mlflow_autotts.cli.mlproject`` rewrites ``MLproject`` (``--check``: exit 1 if
it is out of date); a test checks the committed file is current.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from mlflow_autotts import settings
from mlflow_autotts.cli.options import CONFIG_OPTION, SET_OPTION
from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.evaluation import EvaluateConfig
from mlflow_autotts.search.config import SearchConfig

HEADER = """\
# Generated from the settings dataclasses (SearchConfig in mlflow_autotts/search/config.py,
# EvaluateConfig in mlflow_autotts/evaluation.py, CollectConfig in mlflow_autotts/collect/config.py)
# by `python -m mlflow_autotts.cli.mlproject`;
# do not edit by hand (a test checks this file is up to date).
#
# Every parameter but `config` defaults to "" (not given): only what you pass with -P reaches
# the command, so the settings in -P config=FILE.yaml are never overridden by a default here.
# Parameters are the settings' field names; lists are comma-separated (-P betas=0,0.5,1).
"""


@dataclass(frozen=True)
class EntryPoint:
    """One MLproject entry point: an ``autotts`` command and its settings."""

    name: str
    """Entry point name, also the ``autotts`` command."""
    settings: type
    """The command's settings dataclass."""
    default_config: str
    """The YAML recipe run when no ``-P config=…`` is given."""
    exclude: tuple[str, ...] = ()
    """Fields not offered as parameters: ``mlflow run`` decides them itself (the experiment,
    the run name, logging to MLflow)."""

    def parameters(self) -> list[str]:
        """The settings fields offered as ``-P`` parameters, in declaration order."""
        return [n for n in settings.names(self.settings) if n not in self.exclude]

    def render(self) -> str:
        lines = [f"  {self.name}:", "    parameters:",
                 f'      config: {{type: string, default: "{self.default_config}"}}']
        lines += [f'      {n}: {{type: string, default: ""}}' for n in self.parameters()]
        lines += ["    command: >-", f"      autotts {self.name} {CONFIG_OPTION} {{config}}"]
        lines += [f"      {SET_OPTION} {n}={{{n}}}" for n in self.parameters()]
        return "\n".join(lines) + "\n"


ENTRY_POINTS = (
    EntryPoint("evaluate", EvaluateConfig, "projects/qwen3-aime24/evaluate.yaml",
               exclude=("experiment", "run_name", "mlflow")),
    EntryPoint("search", SearchConfig, "projects/qwen3-aime24/search.yaml", exclude=("experiment",)),
    EntryPoint("collect", CollectConfig, "projects/smollm2-arithmetic/collect.yaml",
               exclude=("experiment", "run_name", "mlflow")),
)


def render() -> str:
    """The whole MLproject file."""
    body = "\n".join(e.render() for e in ENTRY_POINTS)
    return f"{HEADER}name: mlflow-autotts\n\nconda_env: conda.yaml\n\nentry_points:\n{body}"


@click.command()
@click.option("--check", is_flag=True, help="Exit 1 if the file differs from the generated text; write nothing.")
@click.argument("path", default="MLproject", type=click.Path(dir_okay=False, path_type=Path))
def main(check: bool, path: Path) -> None:
    """Write the generated MLproject to PATH (default: ./MLproject)."""
    text = render()
    if check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            click.echo(f"{path} is out of date: run python -m mlflow_autotts.cli.mlproject", err=True)
            sys.exit(1)
        return
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
