"""The ``replay`` mode: each row carries its question's pre-collected branches
(``trajectory``), and the controller runs on a replay episode over them, billed by the
replay rules (``docs/architecture.md``, "Replay and the result record")."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Mapping

from mlflow_autotts.replay.episode import RecordingEpisode, ReplayEpisode, shuffle_order
from mlflow_autotts.serving.modes import RowResult, register_mode
from mlflow_autotts.serving.payload import (
    TRAJECTORY,
    RequestParams,
    Row,
    TrajectoryError,
    parse_interval,
    parse_question,
    parse_trajectory,
)
from mlflow_autotts.serving.runners import BoundController, ControllerFailed


def answer_text(answer: Any) -> str | None:
    """A controller's answer as the response's text (None stays None)."""
    return answer if answer is None or type(answer) is str else repr(answer)


@register_mode("replay")
class ReplayMode:
    name = "replay"
    required_columns: ClassVar[dict[str, str]] = {TRAJECTORY: "each question's branches: a list of "
                                                          "[probe_answers, branch_tokens, final_answer] triples"}

    def __init__(self, config: Mapping[str, Any]):
        pass  # nothing to configure: the request brings the branches

    def solve_row(self, controller: BoundController, row: Row, request: RequestParams) -> RowResult:
        try:
            question = parse_question(row.question)
            branches = parse_trajectory(row.trajectory, question, parse_interval(row.interval_tokens))
        except TrajectoryError as exc:
            return RowResult(error=str(exc), bad_input=True)
        seed = request.shuffle_seed
        order = None if seed < 0 else shuffle_order(branches.n_branches, seed)
        record = request.return_actions
        episode = RecordingEpisode(branches, order) if record else ReplayEpisode(branches, order)
        try:
            answer = controller.solve(episode)
        except ControllerFailed as exc:
            out = RowResult(error=str(exc))
        else:
            out = RowResult(answer_text(answer), episode.tokens_used, episode.branches_opened, episode.intervals)
        if record:
            out.actions = json.dumps(episode.actions)
        return out
