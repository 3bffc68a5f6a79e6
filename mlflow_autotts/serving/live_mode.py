"""The ``live`` mode: a row with only a ``question`` is answered by real generation.

Where generation happens (backend kind, server URL, model, sampling, interval, lookahead)
is the model's ``model_config["live"]``, set at registration (``autotts register …
--live-model … --live-base-url …``), overridden field by field by ``AUTOTTS_LIVE_<FIELD>``
environment variables of the serving process (``live.config.stored_live_config``: the two
built once into a ``LiveConfig`` when the model loads); never by the request, so a caller
cannot point the server at another host. The engine is built on the first live request, not at
load time: replay-only deployments never pay for it.

The rows of one request are solved concurrently (a thread per question, up to
``AUTOTTS_LIVE_CONCURRENCY``, default 16), so the engine batches their branches; a
sandboxed controller's children decide while this process drives generation
(``docs/architecture.md``, "Live generation"). A backend that is down or times out is
``BackendUnavailable``: the request fails with HTTP 503 and the reason, within the
configured timeouts. A question too long for the model's context is the caller's: that
row's error, and HTTP 400 when no row could be answered.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Mapping

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from mlflow_autotts.errors import AutoTTSError, safe_text
from mlflow_autotts.live.backends.base import BackendError
from mlflow_autotts.live.config import ENV_PREFIX, LiveConfig, LiveConfigError, stored_live_config
from mlflow_autotts.live.episode import LiveRunner, QuestionTooLong
from mlflow_autotts.serving.columns import LIVE_COLUMNS
from mlflow_autotts.serving.modes import RowResult, register_mode
from mlflow_autotts.serving.payload import RequestParams, Row, TrajectoryError, parse_question
from mlflow_autotts.serving.replay_mode import answer_text
from mlflow_autotts.serving.runners import BoundController, ControllerFailed

CONCURRENCY_ENV = "AUTOTTS_LIVE_CONCURRENCY"


def unavailable(message: str) -> MlflowException:
    """An error the scoring server answers with HTTP 503."""
    return MlflowException(message, error_code=TEMPORARILY_UNAVAILABLE)


@register_mode("live")
class LiveMode:
    name = "live"
    required_columns: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Mapping[str, Any]):
        # read once at load: a bad AUTOTTS_LIVE_ value fails the load; a bad combination of
        # settings is the operator's, answered with 503 on the first live request
        self.live: LiveConfig | None = None
        self._invalid: str | None = None
        try:
            self.live = stored_live_config(config.get("live"))
        except (LiveConfigError, TypeError) as exc:
            self._invalid = str(exc)
        self._runner: LiveRunner | None = None
        self._lock = threading.Lock()

    def runner(self) -> LiveRunner:
        """The generation runner, built once (thread-safe) on the first live request."""
        with self._lock:
            if self._runner is None:
                if self._invalid is not None:
                    raise unavailable(f"the live backend cannot start: {self._invalid}")
                if self.live is None:
                    raise unavailable("this model has no live backend: register it with --live-model (and "
                                      "--live-base-url for a vLLM server) or set AUTOTTS_LIVE_MODEL and "
                                      "AUTOTTS_LIVE_BASE_URL where it is served")
                try:
                    self._runner = LiveRunner(self.live)
                except (AutoTTSError, TypeError, OSError) as exc:
                    raise unavailable(f"the live backend cannot start: {exc}") from None
            return self._runner

    def solve_rows(self, controller: BoundController, rows: list[Row], request: RequestParams) -> list[RowResult]:
        runner = self.runner()
        workers = max(1, min(len(rows), int(os.environ.get(CONCURRENCY_ENV, "16"))))
        with ThreadPoolExecutor(workers, thread_name_prefix="autotts-live") as pool:
            futures = [pool.submit(self._solve, runner, controller, row) for row in rows]
            return [f.result() for f in futures]  # a 503 from any row fails the request

    def solve_row(self, controller: BoundController, row: Row, request: RequestParams) -> RowResult:
        return self._solve(self.runner(), controller, row)

    @staticmethod
    def _solve(runner: LiveRunner, controller: BoundController, row: Row) -> RowResult:
        try:
            question = parse_question(row.question)
        except TrajectoryError as exc:
            return RowResult(error=str(exc), bad_input=True)
        if not question.strip():
            return RowResult(error="question is empty: live generation needs the question text", bad_input=True)
        try:
            result = runner.solve(controller, question)
        except QuestionTooLong as exc:  # the caller's input: this row's error (400 when every row is bad)
            return RowResult(error=str(exc), bad_input=True)
        except ControllerFailed as exc:
            return RowResult(error=safe_text(exc))
        except BackendError as exc:  # down, timed out, or refusing: not the caller's fault
            raise unavailable(f"the live backend failed: {safe_text(exc)}") from None
        except LiveConfigError as exc:  # the served model's settings: the operator's to mend
            raise unavailable(f"the live backend is misconfigured: {exc}") from None
        s = result.stats
        values = {"generated_tokens": s.generated_tokens, "probe_tokens": s.probe_tokens,
                  "engine_calls": s.engine_calls, "cached_prompt_tokens": s.cached_prompt_tokens,
                  "wall_seconds": round(s.wall_seconds, 3)}
        return RowResult(answer_text(result.answer), s.billed_tokens, s.branches_opened, result.episode.intervals,
                         extra={k: values[k] for k in LIVE_COLUMNS})  # the columns the signature lists
