"""Two slow start-ups at once: work in a forked child while this process prepares something else.

``autotts evaluate`` spends most of a small run importing: the replay needs scipy (~1 s,
for the Beta-confidence table) and logging needs MLflow and its SQL store (~2.5 s). The two
are independent, so :func:`run_beside` replays in a child forked before either is imported
while the parent imports MLflow and opens the store; on a machine with two cores the
replay costs almost nothing on top. Imports are never run in two threads of one process
(module import locks make that deadlock-prone); the child has its own interpreter state.

The parent's imports are the critical path; the child (and the worker processes it starts)
runs at a lower priority (``CHILD_NICENESS``) so that it fills the idle core instead of
taking CPU from them: with ``--workers 2`` on two cores, three busy processes otherwise
slowed the import by about as much as the replay cost.

The child's result (or its error) comes back pickled through a pipe. Without ``fork`` (or
inside a daemonic process, which may not have children) the work simply runs here first.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import sys
import traceback
from typing import Any, Callable, TypeVar

from mlflow_autotts.errors import AutoTTSError

T = TypeVar("T")

CHILD_NICENESS = 10
"""Added to the forked child's niceness (Unix ``nice``); its worker processes inherit it."""


class ChildFailedError(RuntimeError):
    """The child died or failed with an error that could not be sent back as it was."""


def can_fork() -> bool:
    """True where :func:`run_beside` forks (Linux/macOS, not inside a pool worker)."""
    return "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


def run_beside(work: Callable[[], T], meanwhile: Callable[[], Any]) -> T:
    """``work()``'s result, computed in a forked child while this process runs ``meanwhile()``.

    An error raised by ``work`` is raised here (an ``AutoTTSError`` keeps its message and exit
    code; an error that does not survive pickling becomes ``ChildFailedError`` with the
    child's traceback). An error raised by ``meanwhile`` stops the child and propagates.
    """
    if not can_fork():
        result = work()
        meanwhile()
        return result
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(work, send), name="autotts-work")
    child.start()  # multiprocessing flushes stdout/stderr before forking
    send.close()
    try:
        meanwhile()
        try:
            status, payload = receive.recv()
        except EOFError:
            child.join()
            raise ChildFailedError(f"the worker process exited with code {child.exitcode} "
                                   "without a result") from None
        child.join()
    finally:
        receive.close()
        if child.is_alive():
            child.terminate()
            child.join()
    if status == "ok":
        return payload
    raise payload


def _child(work: Callable[[], Any], send: Any) -> None:
    try:
        os.nice(CHILD_NICENESS)
    except OSError:  # not permitted here: run at the parent's priority
        pass
    try:
        result: tuple[str, Any] = ("ok", work())
    except BaseException as exc:  # noqa: BLE001  (everything goes back to the parent)
        result = ("error", _portable(exc))
    try:
        send.send(result)
    except Exception as exc:  # noqa: BLE001  (an unpicklable result)
        send.send(("error", ChildFailedError(f"the worker's result could not be sent back: {exc!r}")))
    finally:
        send.close()
        sys.stdout.flush()
        sys.stderr.flush()


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else an equivalent the parent can raise."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001  (e.g. an exception class with a custom __init__)
        pass
    if isinstance(exc, AutoTTSError):
        same = AutoTTSError(str(exc))
        same.exit_code = exc.exit_code
        return same
    text = "".join(traceback.format_exception(exc)).rstrip()
    return ChildFailedError(f"the worker process failed:\n{text}")


__all__ = ["run_beside", "can_fork", "ChildFailedError"]
