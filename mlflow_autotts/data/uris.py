"""Dataset URIs: local files and folders, and ``autotts:<model>/<benchmark>``.

The 12 published sets are fetched from the AutoTTS repository at a pinned commit and
checked against pinned sha256 digests, so a result computed today can be reproduced from
the same bytes later. Lookup order for ``autotts:`` URIs:

1. ``$AUTOTTS_DATA_DIR/<model>/<benchmark>.json`` — a local mirror, trusted as is (it is
   the user's own copy; hashing it on every load would only cost time).
2. The download cache, ``$AUTOTTS_CACHE_DIR`` or the platform user cache dir, under
   ``datasets/<commit>/<model>/<benchmark>.json``. Files only get there after their
   checksum matched and through an atomic rename, so a hit is trusted too.
3. Download from ``$AUTOTTS_DATA_BASE_URL`` (default: the pinned raw GitHub URL), with
   retries on transient failures, streamed to a temporary file, verified, then renamed
   into the cache. A mismatch or a failed transfer leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow_autotts.data.json_io import atomic_path, read_json
from mlflow_autotts.data.parquet_io import read_parquet
from mlflow_autotts.data.trajectory import Provenance, TrajectorySet
from mlflow_autotts.errors import DataError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

SCHEME = "autotts:"
COMMIT = "3cd98d12c7cb999afc5c21381f22ea5811ac6c05"
DEFAULT_BASE_URL = (f"https://raw.githubusercontent.com/zhengkid/AutoTTS/{COMMIT}"
                    "/efficient_reasoning_controller/test_environment")
MODELS = ("Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B")
BENCHMARKS = ("aime24", "aime25", "hmmt25")
SHA256: dict[str, str] = {
    "Qwen3-0.6B/aime24": "6b4297405b494c84afb05b337af315c617513eb2580ed327ca7040b760988a7d",
    "Qwen3-0.6B/aime25": "33f65695ecc78fb777f53bead2128ba1249772b3608c6a22bd4e674488d453e0",
    "Qwen3-0.6B/hmmt25": "7e7c574aaedcd05b36b801c11e3bdd7e2cfd3b7309a2376967cc1e8bc01ebebc",
    "Qwen3-1.7B/aime24": "5d6c9a63e26c7cf60181c53b67adc7017db146bf2ff1e3b9784673cb97313ad1",
    "Qwen3-1.7B/aime25": "77bfb8e8589d0c0da3ccb6d5852c37bf23273e047664a5086d492896a5ae2496",
    "Qwen3-1.7B/hmmt25": "87d158ecdc3551e375891d19917ce02f8fdcadd778afe99ad2ae179f872fb298",
    "Qwen3-4B/aime24": "d99ce8711c60605b7555a7fc6e66cc5ae0abe7ce6b36bf4e712802d26aa7ffdd",
    "Qwen3-4B/aime25": "977f56022b0cd225bd0233aff1f7b39740c45ec79693475ada8c766ee4097a3f",
    "Qwen3-4B/hmmt25": "4bc0b51765a0fc5a3d9a462b1ff317b70577d478c5cb5e06f20fe9d5b73b4b1c",
    "Qwen3-8B/aime24": "be725bdacc64712088d5c947b9b869471ad659c8465c3e5b6e9ff5191bfd0128",
    "Qwen3-8B/aime25": "969bba7bb0276f66d421d069e078e20a9b3ff4a59977393a2733a97ca6e4566c",
    "Qwen3-8B/hmmt25": "561efa74e3dd4ca79b67463c7c5d449762824b4534bdc7267b19d9af29d2a9a9",
}
"""Pinned digests of the published files at :data:`COMMIT`."""

SUFFIXES = (".json", ".parquet")
_TIMEOUT = (10, 120)  # connect, read (seconds)


def published_names() -> list[str]:
    """``<model>/<benchmark>`` of every published set."""
    return list(SHA256)


def data_dir() -> Path | None:
    """The local mirror from ``AUTOTTS_DATA_DIR``, if set."""
    d = os.environ.get("AUTOTTS_DATA_DIR", "").strip()
    return Path(d).expanduser() if d else None


def cache_dir() -> Path:
    """Root of the download cache (``AUTOTTS_CACHE_DIR`` or the platform user cache dir)."""
    d = os.environ.get("AUTOTTS_CACHE_DIR", "").strip()
    if d:
        return Path(d).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mlflow-autotts"))


def base_url() -> str:
    """Where published files are downloaded from (``AUTOTTS_DATA_BASE_URL`` overrides)."""
    return (os.environ.get("AUTOTTS_DATA_BASE_URL", "").strip() or DEFAULT_BASE_URL).rstrip("/")


def parse_published(uri: str) -> tuple[str, str]:
    """``autotts:<model>/<benchmark>`` -> (model, benchmark); a miss lists the valid names."""
    name = uri[len(SCHEME):].strip().strip("/")
    if name.endswith(".json"):
        name = name[: -len(".json")]
    if name not in SHA256:
        parts = name.split("/")
        if len(parts) != 2:
            hint = "expected autotts:<model>/<benchmark>"
        elif parts[0] not in MODELS:
            hint = f"unknown model {parts[0]!r}; models: {', '.join(MODELS)}"
        else:
            hint = f"unknown benchmark {parts[1]!r}; benchmarks: {', '.join(BENCHMARKS)}"
        raise DataError(uri, f"not a published dataset ({hint}); valid: "
                             + ", ".join(SCHEME + n for n in SHA256))
    model, benchmark = name.split("/")
    return model, benchmark


def published_url(uri: str, base: str = DEFAULT_BASE_URL) -> str:
    """The download URL of a published set (by default the pinned upstream one, which names
    the same bytes wherever they were fetched from: every copy is checked against the pin)."""
    model, benchmark = parse_published(uri)
    return f"{base.rstrip('/')}/{model}/{benchmark}.json"


def _cached_path(model: str, benchmark: str) -> Path:
    return cache_dir() / "datasets" / COMMIT[:12] / model / f"{benchmark}.json"


def resolve_published(uri: str) -> Path:
    """Local path of a published set: the mirror, else the cache, else download into it."""
    model, benchmark = parse_published(uri)
    mirror = data_dir()
    if mirror is not None:
        candidate = mirror / model / f"{benchmark}.json"
        if candidate.is_file():
            return candidate
    cached = _cached_path(model, benchmark)
    if cached.is_file():
        return cached
    _download(uri, published_url(uri, base_url()), SHA256[f"{model}/{benchmark}"], cached)
    return cached


def _session() -> "requests.Session":
    """A requests session that retries connection errors and transient HTTP statuses."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=4, connect=4, read=2, backoff_factor=0.5,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=("GET",))
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _download(uri: str, url: str, expected: str, dest: Path) -> None:
    """Stream ``url`` to a temporary file beside ``dest``, verify its sha256, rename it in.

    On any failure the temporary file and the folders this call created are removed, so
    the cache never holds anything unverified.
    """
    import requests

    log.info("downloading %s from %s", uri, url)
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(uri, f"cannot create the cache folder {dest.parent}: {exc.strerror or exc}") from None
    digest = hashlib.sha256()
    try:
        with _session() as session, session.get(url, stream=True, timeout=_TIMEOUT) as resp:
            if resp.status_code != 200:
                raise DataError(uri, f"download failed: HTTP {resp.status_code} from {url}; nothing was cached")
            with atomic_path(dest) as tmp:
                with open(tmp, "wb") as f:
                    for chunk in resp.iter_content(chunk_size=1 << 16):
                        digest.update(chunk)
                        f.write(chunk)
                got = digest.hexdigest()
                if got != expected:
                    raise DataError(uri, f"checksum mismatch for {url}: expected sha256 {expected}, got {got}; "
                                         "nothing was cached")
    except BaseException as exc:
        for d in created:  # innermost first
            try:
                d.rmdir()
            except OSError:
                break
        if isinstance(exc, requests.RequestException):
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(uri, f"download failed from {url}: {reason}; nothing was cached") from None
        if isinstance(exc, OSError):
            raise DataError(uri, f"cannot write the cache file {dest}: {exc.strerror or exc}") from None
        raise


def _local_path(uri: str) -> Path:
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
    if not path.exists():
        hint = ""
        if not path.is_absolute() and uri.count("/") == 1 and uri.split("/")[0] in MODELS:
            hint = f" (a published set? use {SCHEME}{uri.removesuffix('.json')})"
        raise DataError(uri, f"no such file or folder{hint}")
    return path


def resolve_dataset_uri(uri: str) -> Path:
    """The local file or folder behind a dataset URI, downloading a published set if needed."""
    if uri.startswith(SCHEME):
        return resolve_published(uri)
    return _local_path(uri)


def expand_dataset_uri(uri: str) -> list[str]:
    """One URI per dataset: a folder becomes its ``*.json``/``*.parquet`` files and its
    ``<model>/<benchmark>.json|.parquet`` files (sorted; hidden files skipped)."""
    if uri.startswith(SCHEME):
        return [uri]
    path = _local_path(uri)
    if not path.is_dir():
        return [uri]
    found = sorted(
        f for pattern in ("*", "*/*") for f in path.glob(pattern)
        if f.is_file() and f.suffix in SUFFIXES and not any(part.startswith(".") for part in f.relative_to(path).parts)
    )
    if not found:
        raise DataError(uri, "folder holds no .json or .parquet datasets (looked at */ and */*/)")
    return [str(f) for f in found]


def load_path(path: str | Path, provenance: Provenance | None = None) -> TrajectorySet:
    """Load a local file by its extension."""
    path = Path(path)
    if path.suffix == ".json":
        return read_json(path, provenance)
    if path.suffix == ".parquet":
        return read_parquet(path, provenance)
    raise DataError(str(path), f"unsupported file type {path.suffix or '(none)'!r}; expected .json or .parquet")


def load_dataset(uri: str) -> TrajectorySet:
    """One trajectory set from a URI, with provenance (model, benchmark, source) filled in.

    A folder is accepted when it holds exactly one dataset; use :func:`load_datasets` for
    folders with several.
    """
    if uri.startswith(SCHEME):
        model, benchmark = parse_published(uri)
        path = resolve_published(uri)
        return read_json(path, Provenance(model=model, benchmark=benchmark, source=f"{SCHEME}{model}/{benchmark}"))
    files = expand_dataset_uri(uri)
    if len(files) > 1:
        raise DataError(uri, f"folder holds {len(files)} datasets where one is expected; name one of its files")
    return load_path(files[0])


def load_datasets(uris: list[str]) -> list[TrajectorySet]:
    """Every dataset named by ``uris``, folders expanded, in order."""
    return [load_dataset(u) for uri in uris for u in expand_dataset_uri(uri)]


def is_published_uri(uri: str) -> bool:
    """Whether ``uri`` names a published set (callers log those by name, not by path)."""
    return uri.startswith(SCHEME)
