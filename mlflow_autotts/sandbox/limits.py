"""What a sandbox child may use (``SandboxLimits``) and what isolation it really had (``Isolation``).

Every limit is enforced where the candidate cannot reach it: by the kernel (rlimits,
namespaces, chroot, uid, all set before the candidate's source is compiled) or by the
parent (wall clock, output volume, message sizes, answers). The parent then *observes*
the child's isolation from ``/proc`` and refuses to run a candidate under weaker isolation
than configured, unless ``allow_weaker_isolation`` says otherwise
(``docs/architecture.md``, "The trust boundary").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from mlflow_autotts.sandbox.protocol import EPISODE_PROCESSES
from mlflow_autotts.settings import bounded, check_bounds


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits and isolation of one sandbox child; each field says how it is enforced."""

    wall_seconds: float = bounded(300.0, gt=0)
    """Wall-clock time: batch mode, for the whole candidate (start-up, every β and shuffle);
    session mode, for the child's own turns within one ``solve`` (time the parent spends
    executing episode calls does not count). Enforced by the parent, which kills the
    child's process group."""
    cpu_seconds: float = bounded(240.0, gt=0)
    """CPU time of the child over its life (``RLIMIT_CPU``, SIGXCPU then SIGKILL; the parent
    reads the child's rusage to call it a timeout)."""
    memory_mb: int = bounded(1024, ge=1)
    """Address space of the child in MiB (``RLIMIT_AS``); includes the branches (~10-40 MB)."""
    max_output_bytes: int = bounded(1 << 20, ge=1)
    """Bytes the candidate may write to its stdout and stderr (one batch run, or one
    ``solve``); counted by the parent on the pipes, which kills the child past it."""
    keep_output_bytes: int = bounded(8192, ge=0)
    """How much of that output the parent keeps (``CandidateOutcome.output``)."""
    max_answer_chars: int = bounded(1000, ge=1)
    """Longest answer string ``solve`` may return; checked by the parent."""
    max_open_files: int = bounded(16, ge=1)
    """``RLIMIT_NOFILE`` of the child."""
    max_episode_calls: int = bounded(200_000, ge=1)
    """Episode calls one ``solve`` may make in session mode (serving), counted by the parent,
    which kills the child past it: a solve's work and response stay bounded."""
    isolate_network: bool = True
    """Require a network namespace of the child's own (``unshare --net``; as a non-root
    user with ``--map-root-user``)."""
    drop_privileges: bool = True
    """Require the child chrooted into an empty directory under a uid of its own (which
    also makes ``RLIMIT_NPROC`` bite); needs root."""
    allow_weaker_isolation: bool = False
    """Run candidates even when the observed isolation is weaker than the fields above ask
    (e.g. no ``unshare``, not root). The weaker isolation is still recorded on every outcome;
    without this, the sandbox raises ``SandboxIsolationError`` instead of running."""

    def __post_init__(self) -> None:
        check_bounds(self, bad=_bad_limit)

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_mb) * 1024 * 1024

    @property
    def cpu_rlimit(self) -> int:
        """Whole seconds of ``RLIMIT_CPU`` (the kernel counts whole seconds)."""
        return max(1, int(math.ceil(self.cpu_seconds)))


def _bad_limit(name: str, why: str) -> ValueError:
    """A limit outside its declared bounds: a caller's error, ``SandboxLimits.<name> must be ...``."""
    return ValueError(f"SandboxLimits.{name} {why}")


@dataclass(frozen=True)
class Isolation:
    """The isolation a sandbox child had, as the parent observed it before any candidate
    code ran (``/proc/<pid>``; where there is no ``/proc``, the child's own report)."""

    observed_by: str
    """``parent`` (read from ``/proc`` of the child) or ``child`` (its own report)."""
    network_namespace: bool
    """The child's network namespace differs from the parent's."""
    chroot: bool
    """The child's root directory is the sandbox's empty directory."""
    uid: int | None
    """The child's effective uid (None: could not be read)."""
    own_uid: bool
    """That uid is neither root nor the parent's, and the real and saved uids agree."""
    rlimit_as: int | None
    """Soft limits of the child as read back (None: unlimited or unreadable)."""
    rlimit_cpu: int | None
    rlimit_fsize: int | None
    rlimit_nofile: int | None
    rlimit_nproc: int | None
    rlimit_core: int | None
    audit_hook: bool
    """The child reported its PEP 578 audit hook installed (only the child can see it)."""
    missing: tuple[str, ...]
    """Measures the limits ask for that were not in force (empty: as configured)."""

    @property
    def as_configured(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict[str, object]:
        """Flat values (for run tags and params): ``missing`` joined by commas."""
        d = asdict(self)
        d["missing"] = ",".join(self.missing)
        return d


def missing_measures(limits: SandboxLimits, iso: Isolation) -> tuple[str, ...]:
    """What ``limits`` ask for that ``iso`` does not show in force."""
    missing = []
    if limits.isolate_network and not iso.network_namespace:
        missing.append("network_namespace")
    if limits.drop_privileges and not iso.chroot:
        missing.append("chroot")
    if limits.drop_privileges and not iso.own_uid:
        missing.append("own_uid")

    def capped(value: int | None, cap: int) -> bool:
        return value is not None and value <= cap

    if not capped(iso.rlimit_as, limits.memory_bytes):
        missing.append("rlimit_as")
    if not capped(iso.rlimit_cpu, limits.cpu_rlimit):
        missing.append("rlimit_cpu")
    if not capped(iso.rlimit_fsize, 0):
        missing.append("rlimit_fsize")
    if not capped(iso.rlimit_nofile, int(limits.max_open_files)):
        missing.append("rlimit_nofile")
    # the kernel ignores RLIMIT_NPROC for root: it bites only under another uid
    if not (capped(iso.rlimit_nproc, EPISODE_PROCESSES) and iso.uid not in (None, 0)):
        missing.append("rlimit_nproc")
    if not capped(iso.rlimit_core, 0):
        missing.append("rlimit_core")
    if not iso.audit_hook:
        missing.append("audit_hook")
    return tuple(missing)
