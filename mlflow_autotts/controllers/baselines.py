"""Full-read baselines: self-consistency (SC@N), adaptive (ASC) and early-stopping (ESC)."""

from __future__ import annotations

from mlflow_autotts.controllers.base import Controller, Episode
from mlflow_autotts.controllers.registry import register_controller
from mlflow_autotts.controllers.voting import Tally, beta_confidence, plurality
from mlflow_autotts.errors import ControllerError


def _positive_int(label: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise ControllerError(f"controller {label!r}: parameter {name} must be a positive integer, got {value!r}")
    return int(value)


@register_controller
class SelfConsistency(Controller):
    """SC@N: read ``n`` branches whole and return the plurality."""

    name = "sc"
    uses_beta = False

    def __init__(self, beta: float = 0.5, n: int = 64):
        self.n = _positive_int(self.name, "n", n)
        super().__init__(beta, n=self.n)

    def solve(self, episode: Episode) -> str | None:
        read = episode.get_new_branch_final_answer
        answers: list[str] = []
        for _ in range(self.n):
            try:
                answers.append(read())
            except ValueError:
                break
        return plurality(answers)


@register_controller
class AdaptiveConsistency(Controller):
    """ASC: read branches one by one until the Beta-majority confidence exceeds ``threshold``."""

    name = "asc"
    uses_beta = False

    def __init__(self, beta: float = 0.5, max_samples: int = 64, threshold: float = 0.95):
        self.max_samples = _positive_int(self.name, "max_samples", max_samples)
        self.threshold = float(threshold)
        super().__init__(beta, max_samples=self.max_samples, threshold=self.threshold)

    def solve(self, episode: Episode) -> str | None:
        read = episode.get_new_branch_final_answer
        tally = Tally()
        threshold = self.threshold
        for _ in range(self.max_samples):
            try:
                tally.add(read())
            except ValueError:
                break
            if tally.n >= 2 and beta_confidence(tally.top1, tally.top2) > threshold:
                return tally.winner
        return tally.winner


@register_controller
class EarlyStoppingConsistency(Controller):
    """ESC: read windows of ``window`` branches; stop at the first unanimous window."""

    name = "esc"
    uses_beta = False

    def __init__(self, beta: float = 0.5, max_samples: int = 64, window: int = 8):
        self.max_samples = _positive_int(self.name, "max_samples", max_samples)
        self.window = _positive_int(self.name, "window", window)
        super().__init__(beta, max_samples=self.max_samples, window=self.window)

    def solve(self, episode: Episode) -> str | None:
        read = episode.get_new_branch_final_answer
        seen: list[str] = []
        for _ in range(self.max_samples // self.window):
            current: list[str] = []
            for _ in range(self.window):
                try:
                    current.append(read())
                except ValueError:
                    break
            if not current:
                continue
            seen.extend(current)
            if len(set(current)) == 1:
                return current[0]
        return plurality(seen)
