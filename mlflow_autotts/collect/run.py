"""``collect``: questions in, a validated Parquet replay file out, resumable question by question.

Order of work, so that bad input costs nothing: read the question file and check the
settings, the output path and the backends (reachable, serving the model) before the work
folder exists; then generate questions concurrently (their branches share the engine's
batches) on every endpoint in rotation (``collect/endpoints.py``), keep each finished
question as a shard, merge, validate with the structural checks and the great-expectations
suite, and only then move the file into place.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from mlflow_autotts.collect.config import CollectConfig
from mlflow_autotts.collect.endpoints import Endpoint, Warn, endpoint_error, spread
from mlflow_autotts.collect.questions import Question, QuestionFile, read_questions
from mlflow_autotts.collect.shards import Shards
from mlflow_autotts.data.parquet_io import write_parquet
from mlflow_autotts.data.trajectory import Provenance, TrajectorySet
from mlflow_autotts.data.validate import ValidationReport, validate_uri
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.live.backends import GenerationBackend, BackendUnavailable, make_backend
from mlflow_autotts.live.collection import check_questions, collect_question
from mlflow_autotts.live.config import LiveConfig
from mlflow_autotts.live.episode import LiveRunner, LiveStats
from mlflow_autotts.live.models import resolve_model
from mlflow_autotts.live.prompts import ChatPrompts

MERGED = "merged.parquet"
IN_PROCESS = "in-process"
"""The endpoint name of the in-process engine (or of a backend handed to ``collect``)."""


class CollectError(AutoTTSError):
    """A collection that cannot start (bad output path, model folder, no endpoint up), whose
    every endpoint failed, or whose result failed validation."""


class EndpointWarning(UserWarning):
    """An endpoint taken out of rotation (the collection goes on with the others)."""


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
    endpoints: list[Endpoint] = field(default_factory=list)
    """Every endpoint given, with the questions it finished in this run and, for one taken
    out of rotation, why."""

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
                "questions_per_minute": 60.0 * t.questions / self.wall_seconds if self.wall_seconds else 0.0,
                "endpoints": float(len(self.endpoints)),
                "endpoints_failed": float(sum(e.error is not None for e in self.endpoints)),
                **{f"endpoint.{i}.questions": float(e.served) for i, e in enumerate(self.endpoints)}}


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


def _checked(live: LiveConfig) -> GenerationBackend:
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


def open_endpoints(lives: Sequence[LiveConfig], warn: Warn) -> list[Endpoint]:
    """A backend per live config (``CollectConfig.endpoints``: one per server), checked at
    once (no work folder exists yet): one that cannot be reached is left out with a warning
    (kept in the list with its error); a server that does not serve the model is an error,
    and so is no endpoint up."""
    if len(lives) == 1:  # the in-process engine starts in this thread; one server's error is raised as is
        return [Endpoint(lives[0].base_url or IN_PROCESS, _checked(lives[0]))]
    with ThreadPoolExecutor(len(lives), thread_name_prefix="collect-check") as pool:
        futures = [pool.submit(_checked, live) for live in lives]
    endpoints: list[Endpoint] = []
    errors: list[BaseException] = []
    for live, f in zip(lives, futures):
        name, exc = live.base_url or IN_PROCESS, f.exception()
        if exc is None:
            endpoints.append(Endpoint(name, f.result()))
        elif isinstance(exc, BackendUnavailable):
            endpoints.append(Endpoint(name, None, error=endpoint_error(name, exc)))
        else:
            errors.append(exc)
    if errors or all(e.error is not None for e in endpoints):
        close(endpoints)
        if errors:
            raise errors[0]
        raise CollectError(f"no endpoint is reachable: {'; '.join(e.error or '' for e in endpoints)}")
    for e in endpoints:
        if e.error is not None:
            warn(f"endpoint {e.name} is left out: {e.error}")
    return endpoints


def close(endpoints: list[Endpoint]) -> None:
    for e in endpoints:
        if e.backend is not None:
            e.backend.close()


def _warn(message: str) -> None:
    warnings.warn(EndpointWarning(message), stacklevel=2)


def provenance(config: CollectConfig, questions: QuestionFile, prompts: ChatPrompts,
               backend: dict[str, str], endpoints: list[str]) -> Provenance:
    live = config.generation
    template = str(getattr(prompts.tokenizer, "chat_template", "") or "")
    sampling: dict[str, Any] = dict(live.sampling())
    sampling.pop("base_url")  # the endpoints, with the questions each served (Shards.merge)
    sampling.update(endpoints=endpoints,
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


def collect(config: CollectConfig, *, backend: GenerationBackend | None = None,
            endpoints: Mapping[str, GenerationBackend] | None = None, prompts: ChatPrompts | None = None,
            progress: Progress | None = None, on_start: Start | None = None, warn: Warn | None = None) -> CollectReport:
    """Run the collection ``config`` describes.

    ``backend`` (one) or ``endpoints`` (name -> backend) may be given, already open
    (tests, benchmarks); else one backend per server URL, or the in-process engine, is
    opened and closed here. ``warn`` gets the message of each endpoint taken out of
    rotation (default: an ``EndpointWarning``).
    """
    if backend is not None and endpoints is not None:
        raise ValueError("collect: give backend or endpoints, not both")
    questions = read_questions(config.questions, config.question_column, config.answer_column, config.limit)
    out = check_output(config)
    config = replace(config, model=resolve_model(config.model))  # its live settings are rebuilt with the folder
    live = config.generation
    warn = warn or _warn
    own = backend is None and endpoints is None
    if backend is not None:
        endpoints = {config.base_url[0] if config.base_url else IN_PROCESS: backend}
    eps = open_endpoints(config.endpoints, warn) if own else [Endpoint(n, b) for n, b in (endpoints or {}).items()]
    try:
        prompts = prompts or ChatPrompts.from_pretrained(live.tokenizer_path, live.instruction, live.probe_suffix)
        return _collect(config, questions, out, eps, prompts, progress, on_start, warn)
    finally:
        if own:
            close(eps)


def describe(endpoints: list[Endpoint]) -> dict[str, str]:
    """The backends' descriptions as one (engines differing are listed), with every endpoint."""
    described = [e.backend.describe() for e in endpoints if e.backend is not None]
    out = dict(described[0]) if described else {}
    out["engine"] = ", ".join(dict.fromkeys(d.get("engine", "unknown") for d in described)) or "unknown"
    out.pop("base_url", None)
    out["endpoints"] = ", ".join(e.name for e in endpoints)
    return out


def _collect(config: CollectConfig, questions: QuestionFile, out: Path, endpoints: list[Endpoint],
             prompts: ChatPrompts, progress: Progress | None, on_start: Start | None, warn: Warn) -> CollectReport:
    t0 = time.monotonic()
    described = describe(endpoints)
    prov = provenance(config, questions, prompts, described, [e.name for e in endpoints])
    live = config.generation  # an endpoint's URL is its backend's; the episode does not read it
    runners = {e.name: LiveRunner(live, backend=e.backend, prompts=prompts) for e in endpoints
               if e.backend is not None}
    # a question too long for a model's context is refused by its row before the work folder exists
    check_questions(runners.values(), [q.text for q in questions.questions], str(questions.path))
    shards = Shards(out)
    fingerprint = dict(config.fingerprint(), question_file_sha256=questions.sha256,
                       questions=len(questions.questions))
    done = shards.open(fingerprint, config.resume, questions.questions)
    resumed = len(done)
    totals = Totals()
    lock = threading.Lock()
    finished = [resumed]

    def one(ep: Endpoint, index: int) -> None:
        q = questions.questions[index]
        got = collect_question(runners[ep.name], q.text, q.gold)
        shards.write(index, got.problem, prov, endpoint=ep.name)
        with lock:
            totals.add(got.stats)
            finished[0] += 1
            if progress:
                progress(finished[0], totals, time.monotonic() - t0)

    todo = [i for i in range(len(questions.questions)) if i not in done]
    t_gen = time.monotonic()
    if on_start:
        on_start(len(questions.questions), resumed)
    undone = spread(todo, endpoints, config.concurrency, one, warn)
    if undone:  # finished shards stay for --resume
        raise CollectError(
            f"every endpoint failed ({'; '.join(e.error or '' for e in endpoints)}); "
            f"{len(questions.questions) - len(undone)} of {len(questions.questions)} questions are done and kept "
            f"in {shards.dir}: run again with --resume (on these or other endpoints) to finish")
    generation = time.monotonic() - t_gen
    dataset, report = publish(shards, questions.questions, prov, out)
    return CollectReport(out, dataset, report, totals, resumed, time.monotonic() - t0, generation, described,
                         endpoints)


def publish(shards: Shards, questions: Sequence[Question], prov: Provenance,
            out: Path) -> tuple[TrajectorySet, ValidationReport]:
    """Merge the shards, each checked against its question row, validate the merged file,
    then move it to ``out`` (atomic rename); on any failure ``out`` is untouched."""
    merged = shards.merge(questions, prov)
    tmp = shards.dir / MERGED
    write_parquet(merged, tmp)
    report = validate_uri(str(tmp))
    if not report.passed:
        first = report.failures[0]
        raise CollectError(f"the collected data failed validation ({first.name}: {first.details}); "
                           f"{len(report.failures)} failed check(s) in all, the data is kept in {shards.dir} "
                           f"(autotts data validate {tmp} shows them)")
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    shards.remove()
    return merged, report


__all__ = ["CollectError", "CollectReport", "EndpointWarning", "IN_PROCESS", "Totals", "collect", "open_endpoints",
           "publish"]
