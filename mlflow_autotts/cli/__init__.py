"""The ``autotts`` command line: one module per command group, shared helpers in ``common``."""

from mlflow_autotts.cli.main import console, main

__all__ = ["console", "main"]
