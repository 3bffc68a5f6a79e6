"""A logged model's files as one digest: recorded in the registry, checked before use.

A controller model ships code (the entry file, its ``mlflow_autotts`` modules, the sandbox
for untrusted controllers), its controller source and its settings (``MLmodel``: the
``model_config``, with live generation's base URL and API-key variable; the requirements).
All of that sits in the artifact store, which may be writable by more people than the
registry. So the digest of *every file* of the model directory is computed when the model is
logged (``tracking.model``, from the local folder before upload, as the logged model's
``MODEL_DIGEST_TAG`` tag), copied to the registered version by ``tracking.model_registry``, and
compared before any of the model's code or config is used (``docs/architecture.md``, "The
trust boundary"). A file added, removed or changed is a mismatch: no allowlist of files to
keep up to date, and nothing planted (e.g. a ``.pyc``) passes.

This module imports neither MLflow nor the controllers, so the serving entry and the trusted
commands share it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mlflow_autotts.errors import ControllerError

MODEL_DIGEST_TAG = "autotts.model_sha256"
"""Tag of a logged model and of a registered version: ``model_digest`` of its directory."""
EXPECTED_DIGEST_ENV = "AUTOTTS_MODEL_SHA256"
"""Set where a model is served: the digest the operator expects (takes precedence over the
registry lookup)."""
DIGEST_FORMAT = b"autotts-model-digest/1\n"
LOCAL_ONLY = frozenset({"registered_model_meta"})
"""Files MLflow writes into a downloaded copy (from the registry URI, not the store)."""
BYTECODE_DIR = "__pycache__"


class ModelIntegrityError(ControllerError):
    """A model's files differ from the digest recorded at registration, or none was recorded."""


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_records(model_dir: str | Path, skip_bytecode: bool = False) -> list[tuple[str, str]]:
    """``(relative path, what it holds)`` for every entry of ``model_dir``, sorted by path: a
    file's sha256, or ``link:<target>`` for a symbolic link (never followed).

    ``skip_bytecode`` leaves out ``__pycache__`` folders: the serving process writes them
    when it imports the shipped code, before it can check the folder (see ``verify``)."""
    root = Path(model_dir)
    records: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if skip_bytecode:
            dirnames[:] = [d for d in dirnames if d != BYTECODE_DIR]
        for name in [*dirnames, *filenames]:
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                records.append((rel, f"link:{os.readlink(path)}"))
            elif name in filenames and rel not in LOCAL_ONLY:
                records.append((rel, _file_sha256(path)))
    return sorted(records)


def model_digest(model_dir: str | Path, skip_bytecode: bool = False) -> str:
    """The sha256 over ``model_records`` in order (each ``path NUL content-hash LF``: file
    names hold no NUL, so two different folders never give the same input)."""
    h = hashlib.sha256(DIGEST_FORMAT)
    for rel, held in model_records(model_dir, skip_bytecode):
        h.update(f"{rel}\0{held}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def verify(model_dir: str | Path, expected: str | None, where: str, skip_bytecode: bool = False) -> str:
    """``model_dir``'s digest, after checking it against ``expected`` (the registry's record);
    a ``ModelIntegrityError`` when none was recorded or it differs."""
    if not expected:
        raise ModelIntegrityError(f"{where}: no digest of the model's files was recorded at registration "
                                  f"({MODEL_DIGEST_TAG}); refusing to use it (log and register it again)")
    found = model_digest(model_dir, skip_bytecode)
    if found != expected:
        raise ModelIntegrityError(f"{where}: the model's files do not match the digest recorded at registration "
                                  f"({MODEL_DIGEST_TAG} {expected[:12]}…, found {found[:12]}…): its code or config "
                                  "was changed in the artifact store; refusing to use it")
    return found


__all__ = ["EXPECTED_DIGEST_ENV", "MODEL_DIGEST_TAG", "ModelIntegrityError", "model_digest", "model_records",
           "verify"]
