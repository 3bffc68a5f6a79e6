"""Ending the ``autotts`` process without tearing the interpreter down.

Once MLflow is imported, CPython's shutdown (module teardown, final garbage collection)
takes about a second on a 2-core machine (``benchmarks/cli_speed.py`` measures it), and for
``autotts evaluate`` that second is a large share of what a user waits for.

:func:`exit_now` keeps what a normal exit guarantees for a finished command: every ``atexit``
handler runs (MLflow's, ``logging.shutdown``, multiprocessing's, ``weakref.finalize``) and
stdout/stderr are flushed; only the teardown is skipped. While a non-daemon thread other
than this one is alive, it exits normally instead, so such a thread is joined as usual.
Only the console script and ``python -m mlflow_autotts.cli`` use it; the click group that
tests and embedding callers invoke is untouched.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import Any


def exit_code(code: Any) -> int:
    """The status ``sys.exit(code)`` gives: None is 0, an int itself, anything else is
    printed to stderr and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def others_running() -> bool:
    """True while a non-daemon thread other than the current one is alive."""
    me = threading.current_thread()
    return any(t is not me and not t.daemon and t.is_alive() for t in threading.enumerate())


def exit_now(code: Any) -> None:
    """End the process with ``code`` as described in the module docstring."""
    if others_running():
        sys.exit(code)
    status = exit_code(code)
    atexit._run_exitfuncs()  # noqa: SLF001  (the handlers a normal exit would run, in order)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to deliver
            pass
    os._exit(status)


def run(command: Callable[[], Any]) -> None:
    """Run a click command in standalone mode (it always ends in ``SystemExit``), then
    :func:`exit_now` with its status; any other exception propagates as usual."""
    try:
        command()
    except SystemExit as done:
        exit_now(done.code)
    exit_now(0)


__all__ = ["exit_code", "exit_now", "others_running", "run"]
