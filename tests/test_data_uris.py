"""Dataset URIs: local files and folders, the AUTOTTS_DATA_DIR mirror, and downloading the
published sets from a real HTTP server on loopback (checksums, cache hits, nothing cached on
failure)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from mlflow_autotts.data import load_dataset, load_datasets, resolve_dataset_uri, write_json, write_parquet
from mlflow_autotts.data.uris import COMMIT, SHA256, expand_dataset_uri
from mlflow_autotts.errors import DataError
from tests.helpers import random_set

CLOSED_URL = "http://127.0.0.1:9/never"  # discard port: any download attempt fails loudly


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    """No mirror, an empty cache in tmp_path, and a base URL nothing listens on."""
    monkeypatch.delenv("AUTOTTS_DATA_DIR", raising=False)
    monkeypatch.setenv("AUTOTTS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTOTTS_DATA_BASE_URL", CLOSED_URL)
    return tmp_path / "cache"


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# ------------------------------------------------------------------------ local paths
def test_local_files_and_folders(tmp_path, env):
    root = tmp_path / "sets"
    (root / "Qwen3-4B").mkdir(parents=True)
    (root / "Llama-3.1-8B").mkdir()
    write_json(random_set(2, 4, seed=1), root / "Qwen3-4B" / "aime24.json")
    write_parquet(random_set(3, 4, seed=2, name=""), root / "Llama-3.1-8B" / "math500.parquet")
    write_json(random_set(1, 2, seed=3), root / "extra.json")
    (root / "README.md").write_text("not data")
    (root / ".hidden.json").write_text("[")

    assert expand_dataset_uri(str(root)) == [str(root / "Llama-3.1-8B" / "math500.parquet"),
                                             str(root / "Qwen3-4B" / "aime24.json"), str(root / "extra.json")]
    sets = load_datasets([str(root)])
    assert [s.name for s in sets] == ["Llama-3.1-8B/math500", "Qwen3-4B/aime24", "sets/extra"]
    assert [len(s) for s in sets] == [3, 2, 1]
    one = load_dataset(str(root / "Qwen3-4B" / "aime24.json"))
    assert one.provenance.source == str(root / "Qwen3-4B" / "aime24.json")
    assert load_dataset(str(root / "Qwen3-4B")).name == "Qwen3-4B/aime24"  # a folder with one dataset
    assert resolve_dataset_uri(str(root)) == root
    write_parquet(random_set(1, 2, name="Synth/toy"), tmp_path / "moved.parquet")
    assert load_dataset(str(tmp_path / "moved.parquet")).name == "Synth/toy"  # metadata beats the path

    with pytest.raises(DataError, match="folder holds 3 datasets where one is expected"):
        load_dataset(str(root))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder holds no .json or .parquet datasets"):
        load_datasets([str(tmp_path / "empty")])
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(DataError, match=r"x.csv: unsupported file type '.csv'"):
        load_dataset(str(tmp_path / "x.csv"))


def test_missing_path_suggests_the_published_uri(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hint = r"^Qwen3-4B/aime25: no such file or folder \(a published set\? use autotts:Qwen3-4B/aime25\)$"
    with pytest.raises(DataError, match=hint):
        load_dataset("Qwen3-4B/aime25")


# ------------------------------------------------------------------------ autotts: names
@pytest.mark.parametrize("uri, message", [
    ("autotts:Qwen3-14B/aime24", "unknown model 'Qwen3-14B'; models: Qwen3-0.6B, Qwen3-1.7B, Qwen3-4B, Qwen3-8B"),
    ("autotts:Qwen3-4B/gsm8k", "unknown benchmark 'gsm8k'; benchmarks: aime24, aime25, hmmt25"),
    ("autotts:aime24", "expected autotts:<model>/<benchmark>"),
])
def test_unknown_published_names_list_the_valid_ones(env, uri, message):
    with pytest.raises(DataError) as err:
        load_dataset(uri)
    text = str(err.value)
    assert text.startswith(uri + ": not a published dataset") and message in text
    assert all(f"autotts:{name}" in text for name in SHA256) and "\n" not in text
    assert files_under(env) == []


def test_mirror_is_used_first_without_network_or_cache(data_dir, env, monkeypatch):
    monkeypatch.setenv("AUTOTTS_DATA_DIR", str(data_dir))
    ts = load_dataset("autotts:Qwen3-4B/aime24")
    assert ts.name == "Qwen3-4B/aime24" and ts.provenance.source == "autotts:Qwen3-4B/aime24" and len(ts) == 30
    assert resolve_dataset_uri("autotts:Qwen3-4B/aime24") == data_dir / "Qwen3-4B" / "aime24.json"
    assert [s.name for s in load_datasets(["autotts:Qwen3-0.6B/aime24", "autotts:Qwen3-8B/aime24"])] == \
        ["Qwen3-0.6B/aime24", "Qwen3-8B/aime24"]
    assert files_under(env) == []


# ------------------------------------------------------------------------ downloads
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests_seen: list[str]

    def log_message(self, format, *args):  # noqa: A002 - keep test output clean
        pass

    def do_GET(self):  # noqa: N802
        self.server.requests_seen.append(self.path)
        super().do_GET()


@pytest.fixture
def remote(tmp_path):
    """A real HTTP server on a free loopback port serving tmp_path/remote (laid out like the
    repository's test_environment folder); yields (folder, base_url, server, stop)."""
    folder = tmp_path / "remote"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    server.requests_seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stopped = False

    def stop():
        nonlocal stopped
        if not stopped:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
            stopped = True

    yield folder, f"http://127.0.0.1:{server.server_address[1]}", server, stop
    stop()


def _publish(data_dir: Path, folder: Path, corrupt: bool = False) -> Path:
    src = data_dir / "Qwen3-4B" / "aime24.json"
    assert hashlib.sha256(src.read_bytes()).hexdigest() == SHA256["Qwen3-4B/aime24"]
    dst = folder / "Qwen3-4B" / "aime24.json"
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    if corrupt:  # still valid JSON, one gold answer changed: only the checksum can tell
        text = dst.read_text(encoding="utf-8").replace('"gold_answer": "204"', '"gold_answer": "205"', 1)
        assert text != src.read_text(encoding="utf-8")
        dst.write_text(text, encoding="utf-8")
    return dst


@pytest.mark.slow
def test_download_verifies_caches_and_then_works_offline(data_dir, env, remote, monkeypatch, tmp_path):
    folder, url, server, stop = remote
    _publish(data_dir, folder)
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    monkeypatch.setenv("AUTOTTS_DATA_DIR", str(empty_mirror))  # a mirror without this file is skipped
    monkeypatch.setenv("AUTOTTS_DATA_BASE_URL", url)

    ts = load_dataset("autotts:Qwen3-4B/aime24")
    assert ts.name == "Qwen3-4B/aime24" and len(ts) == 30
    assert server.requests_seen == ["/Qwen3-4B/aime24.json"]
    cached = env / "datasets" / COMMIT[:12] / "Qwen3-4B" / "aime24.json"
    assert files_under(env) == [cached]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == SHA256["Qwen3-4B/aime24"]

    stop()
    again = load_dataset("autotts:Qwen3-4B/aime24")  # served from the cache, server gone
    assert resolve_dataset_uri("autotts:Qwen3-4B/aime24") == cached
    assert [p.gold_answer for p in again.problems] == [p.gold_answer for p in ts.problems]
    assert server.requests_seen == ["/Qwen3-4B/aime24.json"]


@pytest.mark.slow
def test_checksum_mismatch_is_a_clear_error_and_caches_nothing(data_dir, env, remote, monkeypatch):
    folder, url, server, _ = remote
    served = _publish(data_dir, folder, corrupt=True)
    monkeypatch.setenv("AUTOTTS_DATA_BASE_URL", url)
    with pytest.raises(DataError) as err:
        load_dataset("autotts:Qwen3-4B/aime24")
    got = hashlib.sha256(served.read_bytes()).hexdigest()
    assert str(err.value) == (f"autotts:Qwen3-4B/aime24: checksum mismatch for {url}/Qwen3-4B/aime24.json: "
                              f"expected sha256 {SHA256['Qwen3-4B/aime24']}, got {got}; nothing was cached")
    assert files_under(env) == [] and not env.exists()
    assert server.requests_seen == ["/Qwen3-4B/aime24.json"]


@pytest.mark.slow
def test_http_error_is_a_clear_error_and_caches_nothing(env, remote, monkeypatch):
    _, url, server, _ = remote
    monkeypatch.setenv("AUTOTTS_DATA_BASE_URL", url)
    with pytest.raises(DataError, match=r"^autotts:Qwen3-8B/hmmt25: download failed: HTTP 404 from "
                                        rf"{url}/Qwen3-8B/hmmt25.json; nothing was cached$"):
        load_dataset("autotts:Qwen3-8B/hmmt25")
    assert files_under(env) == []
