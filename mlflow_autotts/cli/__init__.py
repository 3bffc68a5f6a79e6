"""The ``autotts`` command line: one module per command group, shared helpers in ``common``."""

from mlflow_autotts.cli.main import main

__all__ = ["main"]
