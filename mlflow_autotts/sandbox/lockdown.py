"""The sandbox child's lockdown: kernel limits, chroot and uid, the audit hook, the import gate.

Runs in the child (imported by ``worker``) after it has read its input and before any
candidate code is compiled. Nothing here trusts the candidate; everything here must also
work without the candidate's cooperation afterwards, which is why the limits are kernel
limits and why the hook keeps its state in closures (``docs/architecture.md``, "The trust
boundary").
"""

from __future__ import annotations

import os
import resource
import sys

from mlflow_autotts.sandbox.policy import ALLOWED_AUDIT_EVENTS, ALLOWED_IMPORTS, FRAME_ATTRIBUTES, allowed_imports_text
from mlflow_autotts.sandbox.protocol import EPISODE_PROCESSES, Limit

UID_BASE = 2_000_000_000
"""The child switches to uid ``UID_BASE + pid``: one unprivileged uid per sandbox process."""


class ForbiddenOperation(PermissionError):
    """A denied operation: files, processes, sockets, introspection of other objects' frames."""


class ForbiddenImport(ImportError):
    """An import outside the allowlist."""


class ForbiddenFrameAccess(ValueError):
    """``sys._getframe`` in controller code."""


DENIED = (ForbiddenOperation, ForbiddenImport, ForbiddenFrameAccess)


def make_hook(viol: list, window: list):
    """The audit hook. ``viol`` collects denied events (the oracle seals its length);
    ``window[0]`` lets the driver read traceback frames, ``window[1]`` lets it fork an
    episode's process (and end as that process ended). Both are reachable only from this
    closure, the oracle's frame and the driver's frame."""
    allowed = ALLOWED_AUDIT_EVENTS
    frame_attrs = FRAME_ATTRIBUTES
    append = viol.append
    Forbidden, FImport, FFrame = ForbiddenOperation, ForbiddenImport, ForbiddenFrameAccess
    _len = len
    _type, _str, _int = type, str, int
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    roots = tuple({os.path.join(os.path.realpath(p), "") for p in (sys.prefix, sys.base_prefix, _package_root())})

    def quiet_open(args) -> bool:
        """Read-only opens of Python sources or ``<...>`` pseudo-files: what tracebacks,
        SyntaxError and unraisable-exception display do. Denied, but not held against the
        candidate."""
        if _len(args) < 3 or _type(args[0]) is not _str:
            return False
        path, mode, flags = args[0], args[1], args[2]
        if _type(mode) is _str:
            if "w" in mode or "a" in mode or "x" in mode or "+" in mode:
                return False
        elif _type(flags) is not _int or flags & write_flags:
            return False
        if path.startswith("<") and path.endswith(">"):
            return True
        return path.endswith((".py", ".pyc")) and path.startswith(roots) and ".." not in path

    def hook(event, args):
        if event == "open" and quiet_open(args):
            raise Forbidden("sandbox: opening files is not allowed in controller code")
        if event in allowed:
            # CPython names the sensitive attributes with exact str built from C strings;
            # anything else (e.g. a str subclass from controller code) is not one of them,
            # and is not compared here, so no controller code runs inside this hook
            name = args[1] if _len(args) > 1 else None
            if _type(name) is not _str:
                return
            if event == "object.__getattr__":
                if name in frame_attrs and not (window[0] and name == "tb_frame"):
                    append(event + ":" + name)
                    raise Forbidden(f"sandbox: reading {name} is not allowed in controller code")
            elif event == "object.__setattr__" and name == "__code__":
                append("object.__setattr__:__code__")
                raise Forbidden("sandbox: replacing __code__ is not allowed in controller code")
            return
        if event == "sys._getframe":
            raise FFrame("sandbox: sys._getframe is not allowed in controller code")
        if window[1] and (event == "os.fork" or event == "os.kill"):
            return  # the driver forking an episode, or ending as its episode's fork ended
        append(event)
        if event == "import":
            raise FImport(f"sandbox: import of {args[0]!r} is not allowed in controller code")
        raise Forbidden(f"sandbox: {event} is not allowed in controller code")

    return hook


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _disabled(*_args, **_kwargs):
    raise ForbiddenImport("sandbox: creating modules is not allowed in controller code")


def lock_down(limits: dict, chroot_dir: str | None) -> list[str]:
    """Kernel limits, chroot and uid switch, no signal handlers, no fresh modules.

    Returns the names of the measures the child saw take effect (its own account; the
    parent reads the same facts from ``/proc`` and trusts those).
    """
    applied = []

    def limit(name: str, which: int, soft: int, hard: int | None = None) -> None:
        try:
            resource.setrlimit(which, (soft, soft if hard is None else hard))
            applied.append(name)
        except (ValueError, OSError):
            pass

    limit("rlimit_as", resource.RLIMIT_AS, int(limits[Limit.MEMORY_MB]) * 1024 * 1024)
    cpu = int(limits[Limit.CPU_SECONDS])
    limit("rlimit_cpu", resource.RLIMIT_CPU, cpu, cpu + 2)  # SIGXCPU, then SIGKILL
    limit("rlimit_fsize", resource.RLIMIT_FSIZE, 0)
    limit("rlimit_core", resource.RLIMIT_CORE, 0)
    limit("rlimit_nofile", resource.RLIMIT_NOFILE, int(limits[Limit.MAX_OPEN_FILES]))
    for name in ("RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE"):
        if hasattr(resource, name):
            limit(name.lower(), getattr(resource, name), 0)
    if chroot_dir and os.geteuid() == 0:  # root, or root of a new user namespace
        try:
            os.chroot(chroot_dir)
            os.chdir("/")
            applied.append("chroot")
        except OSError:
            pass
        try:
            uid = UID_BASE + os.getpid()
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            applied.append("own_uid")
        except OSError:
            pass
    if "own_uid" in applied:  # the child and its one episode fork; the kernel ignores it for root
        limit("rlimit_nproc", resource.RLIMIT_NPROC, EPISODE_PROCESSES)
    # no fork hooks of the candidate's (they would run in the zygote while it forks)
    for module in (os, sys.modules.get("posix")):
        if module is not None and hasattr(module, "register_at_fork"):
            delattr(module, "register_at_fork")
    applied.append("no_fork_hooks")
    # no Python-level signal handlers (they receive the interrupted frame)
    sig = sys.modules.pop("_signal", None)
    if sig is not None:
        for name in ("signal", "setitimer", "alarm", "set_wakeup_fd", "siginterrupt", "pthread_kill",
                     "pthread_sigmask", "raise_signal", "sigwait", "sigwaitinfo", "sigtimedwait",
                     "pidfd_send_signal"):
            if hasattr(sig, name):
                delattr(sig, name)
        applied.append("no_signal_handlers")
    # no fresh builtin/extension modules (those bypass the "import" audit event)
    imp = sys.modules.get("_imp")
    if imp is not None:
        for name in ("create_builtin", "create_dynamic", "exec_builtin", "exec_dynamic"):
            if hasattr(imp, name):
                setattr(imp, name, _disabled)
    return applied


def restricted_import(real_import):
    """The ``__import__`` controller code gets: only ``ALLOWED_IMPORTS``, no relative imports."""
    allowed = ALLOWED_IMPORTS
    modules = sys.modules
    listing = allowed_imports_text(allowed)

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0:
            raise ForbiddenImport("sandbox: relative imports are not allowed in controller code")
        if name not in allowed:
            raise ForbiddenImport(f"sandbox: import of {name!r} is not allowed in controller code; allowed: {listing}")
        for item in fromlist or ():
            sub = f"{name}.{item}"
            if sub in modules and sub not in allowed:
                raise ForbiddenImport(f"sandbox: import of {sub!r} is not allowed in controller code")
        return real_import(name, globals, locals, fromlist, level)

    return __import__
