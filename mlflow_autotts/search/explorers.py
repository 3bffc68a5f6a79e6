"""Which explorer proposes controllers, with every option it takes: one settings part and
the registry of explorer kinds it is checked against.

``ExplorerConfig`` is a part of ``SearchConfig`` (its fields are offered flat: ``--explorer``,
``--llm-temperature``, ...). ``explorer`` names a kind registered in ``EXPLORERS``
(``evolve``, or ``openai:<model>``: the kind, then its argument); the same registry builds it
(``make_explorer``) and checks the name when the settings are read, so a new kind registered
here is at once a valid setting. The API key of an LLM endpoint is only ever named (the
environment variable holding it), so settings can be logged and stored as they are.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from mlflow_autotts import settings
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.plugins import Registry
from mlflow_autotts.search.evolve import EvolveExplorer
from mlflow_autotts.search.llm_explorer import ExplorerError, LLMExplorer
from mlflow_autotts.search.references import References
from mlflow_autotts.search.types import Explorer

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def search_config_error(name: str, why: str) -> AutoTTSError:
    """The error of a bad search setting, whichever part declares it: ``search config: <name> <why>``."""
    return AutoTTSError(f"search config: {name} {why}")


@dataclass(frozen=True)
class ExplorerKind:
    """A registered explorer kind: how to build it, and whether it takes an argument."""

    make: Callable[["ExplorerConfig", References, str], Explorer]
    """Builds the explorer from its settings, the references and the argument after ``kind:``."""
    argument: str = ""
    """What follows ``kind:`` (``<model>``); empty: the kind takes no argument."""

    def usage(self, name: str) -> str:
        return f"{name}:{self.argument}" if self.argument else name


EXPLORERS: Registry[ExplorerKind] = Registry("explorer")
"""Explorer kinds by name; ``ExplorerConfig.explorer`` is ``kind`` or ``kind:argument``."""


def usages() -> str:
    """``evolve, openai:<model>``: how each registered kind is written in ``explorer``."""
    return ", ".join(EXPLORERS.get(n).usage(n) for n in EXPLORERS.names())


@dataclass(frozen=True)
class ExplorerConfig:
    """Which explorer proposes candidates, and its options (the ``llm_*`` ones apply to
    ``openai:<model>`` only)."""

    explorer: str = "evolve"
    """``evolve`` (offline, no LLM) or ``openai:<model>`` (any OpenAI-compatible endpoint)."""
    seed: int = 0
    """Seed of the explorer's random choices."""
    price_input: float = settings.bounded(0.0, ge=0)
    """Explorer price, USD per million input tokens."""
    price_output: float = settings.bounded(0.0, ge=0)
    """Explorer price, USD per million output tokens."""
    llm_base_url: str | None = None
    """Base URL of the OpenAI-compatible endpoint; unset: OPENAI_BASE_URL, else OpenAI's."""
    llm_api_key_env: str | None = None
    """NAME of the environment variable that holds the endpoint's API key (never the key
    itself); unset: OPENAI_API_KEY (a custom endpoint without one gets a placeholder key)."""
    llm_temperature: float | None = settings.bounded(None, ge=0)
    """Sampling temperature; unset leaves the server's default (some reasoning models accept
    no other)."""
    llm_max_tokens: int | None = settings.bounded(8192, ge=1)
    """Completion token limit of one proposal (sent as max_completion_tokens); null in YAML
    sends none."""
    llm_timeout_s: float = settings.bounded(600.0, gt=0)
    """Timeout of one request to the endpoint, in seconds."""
    llm_max_retries: int = settings.bounded(3, ge=0)
    """Retries of a failed request (with backoff; connection errors, 408/409/429 and 5xx)."""
    llm_leaderboard_size: int = settings.bounded(8, ge=1)
    """Candidates shown in the prompt's leaderboard."""
    llm_feedback_chars: int = settings.bounded(3000, ge=0)
    """Longest feedback of a parent (where it loses) shown in the prompt."""
    llm_extra_body: dict[str, Any] | None = None
    """Extra request fields for the server, e.g. vLLM's
    ``chat_template_kwargs={"enable_thinking": false}``."""

    def __post_init__(self) -> None:
        settings.check_bounds(self, search_config_error)
        kind, sep, arg = self.explorer.partition(":")
        plugin = EXPLORERS.get(kind) if kind in EXPLORERS else None
        if plugin is None or bool(sep) != bool(plugin.argument) or (plugin.argument and not arg.strip()):
            raise search_config_error("explorer", f"must be one of {usages()}, got {self.explorer!r}")
        if self.llm_api_key_env is not None and not _ENV_NAME.fullmatch(self.llm_api_key_env):
            raise search_config_error("llm_api_key_env", "must be the name of an environment variable (never the "
                                      "key itself)")

    def api_key(self) -> str | None:
        """The key from the environment variable ``llm_api_key_env`` names (None: the client's own lookup)."""
        if self.llm_api_key_env is None:
            return None
        key = os.environ.get(self.llm_api_key_env)
        if not key:
            raise ExplorerError(f"llm_api_key_env names {self.llm_api_key_env}, which is not set")
        return key


def explorer_kind(name: str, argument: str = "") -> Callable[[Callable], Callable]:
    """Register a factory ``(config, references, argument) -> Explorer`` as kind ``name``."""
    def register(make: Callable) -> Callable:
        EXPLORERS.add(name, ExplorerKind(make, argument))
        return make
    return register


@explorer_kind("evolve")
def _evolve(config: ExplorerConfig, references: References, _arg: str) -> Explorer:
    return EvolveExplorer(seed=config.seed, target_accuracy=references.sc64_accuracy,
                          budget_tokens=references.token_budget, reference=references.cmc_points)


@explorer_kind("openai", argument="<model>")
def _openai(config: ExplorerConfig, references: References, model: str) -> Explorer:
    return LLMExplorer(model, base_url=config.llm_base_url, api_key=config.api_key(),
                       price_input=config.price_input, price_output=config.price_output,
                       temperature=config.llm_temperature, max_tokens=config.llm_max_tokens,
                       timeout=config.llm_timeout_s, max_retries=config.llm_max_retries,
                       leaderboard_size=config.llm_leaderboard_size, feedback_chars=config.llm_feedback_chars,
                       extra_body=dict(config.llm_extra_body) if config.llm_extra_body else None, seed=config.seed)


def make_explorer(config: ExplorerConfig, references: References) -> Explorer:
    """The explorer ``config.explorer`` names (``kind`` or ``kind:argument``), aimed at the
    references' goal."""
    kind, _, arg = config.explorer.partition(":")
    return EXPLORERS.get(kind, "search config: explorer").make(config, references, arg)


__all__ = ["ExplorerConfig", "ExplorerKind", "EXPLORERS", "explorer_kind", "make_explorer", "usages",
           "search_config_error"]
