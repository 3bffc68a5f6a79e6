"""The ``autotts`` command line. MLproject entry points call the same commands.

Every error caused by the user's input is printed as one line (``error: …``) with exit
status 2; a refused promotion or failed validation exits 1. Each command group lives in
its own module, and each command's options are generated from its settings dataclass
(``cli/options.py``). MLflow, pandas and the like are imported where they are used, so
``autotts --help`` stays fast.
"""

from __future__ import annotations

import os
import sys

import click

from mlflow_autotts.cli.collect import collect_cmd
from mlflow_autotts.cli.common import AutoTTSGroup
from mlflow_autotts.cli.data import data_group
from mlflow_autotts.cli.evaluate import evaluate
from mlflow_autotts.cli.live import live_group
from mlflow_autotts.cli.registry import promote_cmd, register_cmd
from mlflow_autotts.cli.search import search_cmd


@click.group(cls=AutoTTSGroup)
@click.version_option(package_name="mlflow-autotts")
def main() -> None:
    """Find, ship and serve test-time-scaling controllers for reasoning LLMs."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


for _cmd in (collect_cmd, evaluate, data_group, search_cmd, register_cmd, promote_cmd, live_group):
    main.add_command(_cmd)

if __name__ == "__main__":
    sys.exit(main())
