"""Errors that reach the user as one line (exit status 2), never as a traceback."""

from __future__ import annotations


class AutoTTSError(Exception):
    """Base for every error caused by the user's input (data, names, parameters)."""

    exit_code = 2


class DataError(AutoTTSError):
    """Trajectory data that cannot be read or fails validation.

    The message always names the source (file or URI) and, where it applies, the problem
    index and field, so a user can find the bad record without a debugger.
    """

    def __init__(self, source: str, message: str, problem: int | None = None, field: str | None = None):
        self.source = source
        self.problem = problem
        self.field = field
        self.detail = message
        where = source
        if problem is not None:
            where += f": problem {problem}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # its own arguments, so it crosses a process (a worker, a Ray task) as itself
        return type(self), (self.source, self.detail, self.problem, self.field)


class ControllerError(AutoTTSError):
    """An unknown controller name, a bad source file, or invalid controller parameters."""


class BackendError(AutoTTSError):
    """Generation failed outside the controller (a backend refused a request, is down or
    timed out). Neither the controller's fault nor the caller's: runners let it through
    and serving answers 503 (``docs/architecture.md``, "Live generation")."""
