"""``collect``: questions in, a validated Parquet replay file out, resumable question by question.

Order of work, so that bad input costs nothing: read the question file and check the
settings, the output path and the backend (reachable, serving the model) before the work
folder exists; then generate questions concurrently (their branches share the engine's
batches), keep each finished question as a shard, merge, validate with the structural
checks and the great-expectations suite, and only then move the file into place.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.collect.questions import QuestionFile, read_questions
from mlflow_autotts.collect.shards import Shards
from mlflow_autotts.data.parquet_io import write_parquet
from mlflow_autotts.data.trajectory import Provenance, TrajectorySet
from mlflow_autotts.data.validate import ValidationReport, validate_uri
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.live.backends import Backend, make_backend
from mlflow_autotts.live.collection import collect_question
from mlflow_autotts.live.episode import LiveRunner, LiveStats
from mlflow_autotts.live.models import resolve_model
from mlflow_autotts.live.prompts import ChatPrompts

MERGED = "merged.parquet"


class CollectError(AutoTTSError):
    """A collection that cannot start (bad output path, model folder) or whose result failed validation."""


@dataclass
class Totals:
    """Sums over the questions collected by this process (not those resumed from shards)."""

    questions: int = 0
    branches: int = 0
    generated_tokens: int = 0
    probe_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    engine_calls: int = 0
    engine_seconds: float = 0.0

    def add(self, stats: LiveStats) -> None:
        self.questions += 1
        self.branches += stats.branches_opened
        self.generated_tokens += stats.generated_tokens
        self.probe_tokens += stats.probe_tokens
        self.prompt_tokens += stats.prompt_tokens
        self.cached_prompt_tokens += stats.cached_prompt_tokens
        self.engine_calls += stats.engine_calls
        self.engine_seconds += stats.engine_seconds

    @property
    def cache_hit_rate(self) -> float:
        """Share of prompt tokens served from the prefix cache."""
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass
class CollectReport:
    """What a collection produced and what it cost."""

    output: Path
    dataset: TrajectorySet
    validation: ValidationReport
    totals: Totals
    resumed: int
    """Questions already finished in the work folder when this run started."""
    wall_seconds: float
    generation_seconds: float
    """From the first question started to the last shard written (without validation)."""
    backend: dict[str, str] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        t = self.totals
        return (t.generated_tokens + t.probe_tokens) / self.wall_seconds if self.wall_seconds else 0.0

    def metrics(self) -> dict[str, float]:
        t = self.totals
        return {"questions": float(len(self.dataset)), "questions_generated": float(t.questions),
                "questions_resumed": float(self.resumed), "branches": float(t.branches),
                "generated_tokens": float(t.generated_tokens), "probe_tokens": float(t.probe_tokens),
                "prompt_tokens": float(t.prompt_tokens), "prefix_cache_hit_rate": t.cache_hit_rate,
                "engine_calls": float(t.engine_calls), "wall_seconds": self.wall_seconds,
                "generation_seconds": self.generation_seconds,
                "tokens_per_second": self.tokens_per_second,
                "questions_per_minute": 60.0 * t.questions / self.wall_seconds if self.wall_seconds else 0.0}


def check_output(config: CollectConfig) -> Path:
    out = Path(config.output)
    if out.exists() and not out.is_file():
        raise CollectError(f"output {out} exists and is not a file")
    if out.exists() and not config.resume:
        raise CollectError(f"output {out} already exists; choose another path or delete it")
    for parent in out.parents:  # the nearest existing folder must be a writable folder
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                raise CollectError(f"output {out}: {parent} is not a writable folder")
            break
    return out


def open_backend(config: CollectConfig) -> Backend:
    """The backend, checked to serve the model (no work folder exists yet)."""
    live = config.live_config()
    if live.backend == "vllm" and not (Path(live.model) / "config.json").is_file():
        raise CollectError(f"model {live.model!r} is not a model folder (no config.json there) for the "
                           "in-process vllm backend")
    backend = make_backend(live)
    try:
        backend.check_model()
    except BaseException:
        backend.close()
        raise
    return backend


def provenance(config: CollectConfig, questions: QuestionFile, prompts: ChatPrompts,
               backend: dict[str, str]) -> Provenance:
    live = config.live_config()
    template = str(getattr(prompts.tokenizer, "chat_template", "") or "")
    sampling: dict[str, Any] = dict(live.sampling())
    sampling.update(
        branches=config.branches, group_window=config.group_window, tokenizer=live.tokenizer_path,
        chat_template_sha256=hashlib.sha256(template.encode()).hexdigest(),
        backend=backend.get("backend", live.backend), engine=backend.get("engine", "unknown"),
        question_file=str(Path(questions.path).resolve()), question_file_sha256=questions.sha256,
        question_column=config.question_column, answer_column=config.answer_column,
        questions=len(questions.questions), collected_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return Provenance(model=Path(live.model.rstrip("/")).name, benchmark=config.benchmark_name,
                      source=str(Path(config.output).resolve()), sampling=sampling)


Progress = Callable[[int, Totals, float], None]
"""Called after each finished question with (questions done in all, totals, elapsed seconds)."""
Start = Callable[[int, int], None]
"""Called once the work starts, with (questions in all, questions already done)."""


def collect(config: CollectConfig, *, backend: Backend | None = None, prompts: ChatPrompts | None = None,
            progress: Progress | None = None, on_start: Start | None = None) -> CollectReport:
    """Run the collection ``config`` describes; ``backend``/``prompts`` may be shared (tests, benchmarks)."""
    questions = read_questions(config.questions, config.question_column, config.answer_column, config.limit)
    out = check_output(config)
    config = replace(config, model=resolve_model(config.model))
    live = config.live_config()
    own = backend is None
    backend = backend or open_backend(config)
    try:
        prompts = prompts or ChatPrompts.from_pretrained(live.tokenizer_path, live.instruction, live.probe_suffix)
        return _collect(config, questions, out, backend, prompts, progress, on_start)
    finally:
        if own:
            backend.close()


def _collect(config: CollectConfig, questions: QuestionFile, out: Path, backend: Backend, prompts: ChatPrompts,
             progress: Progress | None, on_start: Start | None) -> CollectReport:
    t0 = time.monotonic()
    described = backend.describe()
    prov = provenance(config, questions, prompts, described)
    shards = Shards(out)
    fingerprint = dict(config.fingerprint(), question_file_sha256=questions.sha256,
                       questions=len(questions.questions))
    done = shards.open(fingerprint, config.resume)
    resumed = len(done)
    runner = LiveRunner(config.live_config(), backend=backend, prompts=prompts)
    totals = Totals()
    lock = threading.Lock()
    finished = [resumed]

    def one(index: int) -> None:
        q = questions.questions[index]
        got = collect_question(runner, q.text, q.gold)
        shards.write(index, got.problem, prov)
        with lock:
            totals.add(got.stats)
            finished[0] += 1
            if progress:
                progress(finished[0], totals, time.monotonic() - t0)

    todo = [i for i in range(len(questions.questions)) if i not in done]
    t_gen = time.monotonic()
    if on_start:
        on_start(len(questions.questions), resumed)
    if todo:
        with ThreadPoolExecutor(config.concurrency, thread_name_prefix="collect") as pool:
            futures: list[Future] = [pool.submit(one, i) for i in todo]
            finished_futures, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in finished_futures if f.exception() is not None), None)
            if failed is not None:
                pool.shutdown(wait=True, cancel_futures=True)  # finished shards stay for --resume
                raise failed.exception()  # type: ignore[misc]
    generation = time.monotonic() - t_gen
    dataset, report = publish(shards, len(questions.questions), prov, out)
    return CollectReport(out, dataset, report, totals, resumed, time.monotonic() - t0, generation, described)


def publish(shards: Shards, count: int, prov: Provenance, out: Path) -> tuple[TrajectorySet, ValidationReport]:
    """Merge the shards, validate the merged file, then move it to ``out`` (atomic rename)."""
    merged = shards.merge(count, prov)
    tmp = shards.dir / MERGED
    write_parquet(merged, tmp)
    report = validate_uri(str(tmp))
    if not report.passed:
        raise CollectError(f"the collected data failed validation (kept in {shards.dir}):\n{report.format()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    shards.remove()
    return merged, report


__all__ = ["CollectError", "CollectReport", "Totals", "collect", "publish"]
