"""The ``autotts`` command line. MLproject entry points call the same commands.

Every error caused by the user's input is printed as one line (``error: …``) with exit
status 2; a refused promotion or failed validation exits 1. Each command group lives in
its own module, imported only when that command runs (``cli/lazy.py``), and each command's
options are generated from its settings dataclass (``cli/options.py``). MLflow, pandas and
the like are imported where they are used, so ``autotts --help`` stays fast.
"""

from __future__ import annotations

import os

import click

from mlflow_autotts.cli import process_exit
from mlflow_autotts.cli.lazy import LazyCommand, LazyCommands, LazyGroup

COMMANDS = {
    "collect": LazyCommand(
        "mlflow_autotts.cli.collect", "collect_cmd",
        "Sample branches of every question on a vLLM-served model, probe every interval, and write them "
        "as a validated Parquet replay file (``--resume`` continues a killed run)."),
    "evaluate": LazyCommand(
        "mlflow_autotts.cli.evaluate", "evaluate",
        "Score a controller in replay on DATA (dataset URIs: files, folders, autotts:<model>/<benchmark>)."),
    "data": LazyCommand(
        "mlflow_autotts.cli.data", "data_group",
        "Trajectory data: validate it, convert between the published JSON and Parquet."),
    "search": LazyCommand(
        "mlflow_autotts.cli.search", "search_cmd",
        "Discover a controller: propose, score in sandboxed replay, keep the best, register it as challenger."),
    "register": LazyCommand(
        "mlflow_autotts.cli.model_registry", "register_cmd",
        "Log CONTROLLER (a registered name, path.py[:Class], or a model URI to re-register) as an MLflow "
        "model and register it as a new version."),
    "promote": LazyCommand(
        "mlflow_autotts.cli.model_registry", "promote_cmd",
        "Replay the --from and --to versions on the gate data; move --to to the candidate only if it keeps "
        "accuracy and tokens within the limits (exit 1 when refused)."),
    "gatekeeper": LazyCommand(
        "mlflow_autotts.cli.gatekeeper", "gatekeeper_group",
        "Promote in the registry UI, behind the replay gate: a webhook receiver that gates @candidate into "
        "@champion and moves back a @champion the gate did not promote."),
    "serve": LazyCommand(
        "mlflow_autotts.cli.serve", "serve_cmd",
        "Serve MODEL_URI (a registered controller, e.g. models:/autotts-controller@champion) as an "
        "OpenAI-compatible endpoint: /v1/chat/completions, /v1/responses, /v1/models, /health, and "
        "/invocations as mlflow models serve answers it; one MLflow trace per request."),
    "live": LazyCommand(
        "mlflow_autotts.cli.live", "live_group",
        "Live generation on vLLM: model folders for serving and collection."),
}
"""Every ``autotts`` command, imported only when it runs (``cli/lazy.py``); the help texts
are the commands' own first paragraphs (tests/test_cli_startup.py checks they match)."""


@click.group(cls=LazyGroup, commands=LazyCommands(COMMANDS))
@click.version_option(package_name="mlflow-autotts")
def main() -> None:
    """Find, ship and serve test-time-scaling controllers for reasoning LLMs."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def console() -> None:
    """The ``autotts`` console script and ``python -m mlflow_autotts.cli``: the CLI, then an
    exit that skips the interpreter's teardown (``cli/process_exit.py``: ~1 s once MLflow is
    imported)."""
    process_exit.run(main)


if __name__ == "__main__":
    console()
