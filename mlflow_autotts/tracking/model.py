"""Controllers as MLflow models: the ``ControllerModel`` pyfunc and the helpers that log it.

The model is logged *from code* (``pyfunc_code.py`` calls ``mlflow.models.set_model``), so
nothing is pickled. What makes one model differ from another is data: the controller's
source as a readable ``.py`` artifact and its parameters in ``model_config``. The
``mlflow_autotts`` package travels with the model (``code_paths``) because it is not on
PyPI; the pinned requirements cover the rest, so ``log_model`` never infers them.

``predict`` takes one row per question and returns one row per question. Bad input in a
row (a malformed trajectory) is reported in that row's ``error``; only when *every* row is
bad, or the request itself is (a missing column, an unknown backend or parameter), the call
fails with an ``MlflowException(INVALID_PARAMETER_VALUE)``, which the scoring server turns
into HTTP 400 with the message.

No ``from __future__ import annotations`` here: MLflow reads ``predict``'s type hints at
class creation, and ``pd.DataFrame`` must be a real type for it to skip hint-based checks.
"""

import ast
import contextvars
import hashlib
import inspect
import json
import logging
import math
import numbers
import shutil
import tempfile
from dataclasses import dataclass
from functools import reduce
from itertools import accumulate
from operator import iadd
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from mlflow_autotts.controllers.base import Controller, build_controller, check_beta
from mlflow_autotts.controllers.loading import ControllerSpec, split_source_ref
from mlflow_autotts.data.trajectory import Branches
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.replay.episode import RecordingEpisode, ReplayEpisode, shuffle_order

_log = logging.getLogger(__name__)

MODEL_FORMAT = 1
"""Version of the model layout below; ``model_config["autotts"]`` holds it and marks the
model as an autotts controller."""
SOURCE_ARTIFACT = "controller_source"
"""Name of the artifact holding the controller's source file."""
CODE_FILE = Path(__file__).with_name("pyfunc_code.py")
"""The models-from-code entry file."""
DEFAULT_INTERVAL = 500
"""``interval_tokens`` of a row that does not give one (the published data's probe_freq)."""
TRIPLE_FIELDS = ("probe_answers", "branch_tokens", "final_answer")
_SEQ = (list, tuple, np.ndarray)


# ------------------------------------------------------------------------ model config
def source_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ControllerSource:
    """A controller class together with the source file that defines it."""

    cls: type
    """The controller class."""
    path: Path
    """The ``.py`` file defining it (a built-in's module file, or the user's file)."""
    registry_name: str | None
    """The registry key when the class is a registered built-in, else None."""

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def label(self) -> str:
        return getattr(self.cls, "name", "") or self.cls.__name__


def controller_source(spec: ControllerSpec) -> ControllerSource:
    """Find the class ``spec`` names and the file its source lives in."""
    cls = spec.controller_class()
    src = split_source_ref(spec.ref)
    if src is None:  # a registered name: ship the module that defines it
        path = inspect.getsourcefile(cls)
        if path is None:
            raise ControllerError(f"controller {spec.ref!r}: cannot find its source file")
        return ControllerSource(cls, Path(path), spec.ref)
    return ControllerSource(cls, Path(src[0]), None)


def model_config_for(spec: ControllerSpec) -> tuple[dict[str, Any], ControllerSource]:
    """The ``model_config`` of a logged controller, and where its source is.

    Imports and builds the controller (validating β and the parameters): trusted code only;
    see ``candidate_config`` for explorer-written sources."""
    source = controller_source(spec)
    controller = spec.build()  # validates β and the parameters before anything is logged
    cfg = controller.config()
    config = _config(label=source.label, class_name=source.cls.__name__, registry_name=source.registry_name,
                     source_file=source.path.name, text=source.text, beta=float(cfg.get("beta", controller.beta)),
                     uses_beta=bool(getattr(source.cls, "uses_beta", True)),
                     params={k: v for k, v in cfg.items() if k != "beta"})
    return config, source


def candidate_config(source: str, class_name: str, label: str, beta: float, params: Mapping[str, Any] | None = None,
                     uses_beta: bool = True) -> dict[str, Any]:
    """The ``model_config`` of an untrusted candidate, from facts, without executing it.

    ``label`` and ``uses_beta`` are what the sandbox reported; the source is only parsed
    (to check that it defines ``class_name``), never imported. The source file is named
    after the class, so a hostile label cannot choose a path."""
    if not isinstance(source, str):
        raise ControllerError(f"candidate source must be a string, got {type(source).__name__}")
    if not (isinstance(class_name, str) and class_name.isidentifier()):
        raise ControllerError(f"candidate class name must be a Python identifier, got {class_name!r}")
    if not (isinstance(label, str) and len(label) <= 200):
        raise ControllerError(f"candidate label must be a string of at most 200 characters, got {label!r:.250}")
    label = label.strip() or class_name
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ControllerError(f"candidate source does not parse (line {exc.lineno}): {exc.msg}") from None
    if not any(isinstance(node, ast.ClassDef) and node.name == class_name for node in tree.body):
        raise ControllerError(f"candidate source defines no top-level class {class_name!r}")
    params = dict(params or {})
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ControllerError(f"candidate params must be plain JSON values: {exc}") from None
    return _config(label=label, class_name=class_name, registry_name=None, source_file=f"{class_name}.py",
                   text=source, beta=check_beta(beta), uses_beta=bool(uses_beta), params=params)


def _config(*, label: str, class_name: str, registry_name: str | None, source_file: str, text: str, beta: float,
            uses_beta: bool, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "autotts": MODEL_FORMAT,
        "controller": label,
        "class_name": class_name,
        "registry_name": registry_name,
        "source_file": source_file,
        "source_sha256": source_sha256(text),
        "beta": beta,
        "uses_beta": uses_beta,
        "params": params,
    }


def is_controller_config(config: Any) -> bool:
    return isinstance(config, Mapping) and config.get("autotts") == MODEL_FORMAT and "class_name" in config


def spec_from_config(config: Mapping[str, Any], source_path: str | Path | None) -> ControllerSpec:
    """The spec that rebuilds the logged controller.

    A built-in is taken from the registry (its module cannot be executed a second time
    without registering its names twice); a mismatch between the installed source and the
    logged one is reported, since the numbers may then differ. A source-file controller is
    loaded from the logged file itself.
    """
    params = dict(config.get("params") or {})
    beta = config.get("beta")
    name = config.get("registry_name")
    if name:
        spec = ControllerSpec(name, beta, params)
        installed = inspect.getsourcefile(spec.controller_class())
        if installed and source_sha256(Path(installed).read_text(encoding="utf-8")) != config.get("source_sha256"):
            _log.warning("the installed built-in controller %r differs from the source logged with the model "
                         "(sha256 %s); using the installed one", name, config.get("source_sha256"))
        return spec
    if source_path is None:
        raise ControllerError(f"controller {config.get('controller')!r}: the model has no {SOURCE_ARTIFACT} artifact")
    return ControllerSpec(f"{source_path}:{config['class_name']}", beta, params)


# -------------------------------------------------------------------- payload parsing
class TrajectoryError(ValueError):
    """One row's trajectory cannot be replayed; the message says what and where."""


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_tokens(value: Any, b: int) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        tokens = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and float(value).is_integer():
        tokens = int(value)
    else:
        raise TrajectoryError(f"branch {b}: branch_tokens must be an integer, got {value!r}")
    if tokens < 0:
        raise TrajectoryError(f"branch {b}: branch_tokens must be >= 0, got {tokens}")
    return tokens


def _triples(value: Any) -> Any:
    """The branch list of a trajectory in triple form, from any accepted encoding."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise TrajectoryError(f"trajectory is not valid JSON ({exc})") from None
    if isinstance(value, Mapping):
        finals_key = "final_answer" if "final_answer" in value else "final_answers"
        missing = [k for k in ("probe_answers", "branch_tokens", finals_key) if k not in value]
        if missing:
            raise TrajectoryError(f"trajectory columns miss {', '.join(missing)} "
                                  f"(expected {', '.join(TRIPLE_FIELDS)})")
        cols = [value["probe_answers"], value["branch_tokens"], value[finals_key]]
        for key, col in zip(TRIPLE_FIELDS, cols):
            if not isinstance(col, _SEQ):
                raise TrajectoryError(f"trajectory column {key} must be a list, got {type(col).__name__}")
        lengths = {len(c) for c in cols}
        if len(lengths) != 1:
            raise TrajectoryError("trajectory columns have different lengths: "
                                  + ", ".join(f"{k}={len(c)}" for k, c in zip(TRIPLE_FIELDS, cols)))
        return list(zip(*cols))
    if not isinstance(value, _SEQ):
        raise TrajectoryError("trajectory must be a list of [probe_answers, branch_tokens, final_answer] "
                              f"triples or a dict of those columns, got {type(value).__name__}")
    return value


def _fast_columns(triples: Any) -> tuple[list[str], list[int], list[int], list[str]] | None:
    """The flat arrays in a few C-speed passes, for the common well-formed case (JSON lists
    of str/int); None sends anything else to the checking loop, which names the problem."""
    if type(triples) is not list or set(map(type, triples)) != {list} or set(map(len, triples)) != {3}:
        return None
    probes, tokens, finals = zip(*triples)
    if set(map(type, probes)) != {list} or not set(map(type, tokens)) <= {int} or min(tokens) < 0:
        return None
    flat = reduce(iadd, probes, [])  # list.extend per branch: twice as fast as chain.from_iterable
    try:  # str.join is the cheapest "all strings" check there is
        "".join(flat)
        "".join(finals)
    except TypeError:
        return None
    return flat, [0, *accumulate(map(len, probes))], list(tokens), list(finals)


def _checked_columns(triples: Any) -> tuple[list[str], list[int], list[int], list[str]]:
    flat: list[Any] = []
    offsets = [0]
    tokens: list[int] = []
    finals: list[str] = []
    for b, br in enumerate(triples):
        if not isinstance(br, _SEQ) or len(br) != 3:
            got = f"{len(br)} fields" if isinstance(br, _SEQ) else type(br).__name__
            raise TrajectoryError(f"branch {b}: expected 3 fields [probe_answers, branch_tokens, final_answer], got {got}")
        probes, tok, final = br
        if not isinstance(probes, _SEQ):
            raise TrajectoryError(f"branch {b}: probe_answers must be a list of strings, got {type(probes).__name__}")
        for k, a in enumerate(probes):
            if type(a) is not str:
                raise TrajectoryError(f"branch {b}: probe_answers[{k}] must be a string, got {a!r}")
        if type(final) is not str:
            raise TrajectoryError(f"branch {b}: final_answer must be a string, got {final!r}")
        flat.extend(probes)
        offsets.append(len(flat))
        tokens.append(_as_tokens(tok, b))
        finals.append(final)
    return flat, offsets, tokens, finals


def parse_trajectory(value: Any, question: str, interval_tokens: int = DEFAULT_INTERVAL) -> Branches:
    """One question's branches from a request cell.

    Accepted: a list of ``[probe_answers, branch_tokens, final_answer]`` triples (the
    published form), a dict of the columns ``probe_answers``, ``branch_tokens``,
    ``final_answer`` (the Parquet form), or a JSON string of either. Sequences may be
    lists, tuples or numpy arrays (as pandas gives them from Parquet).
    """
    if _is_missing(value):
        raise TrajectoryError("trajectory is missing")
    triples = _triples(value)
    if len(triples) == 0:
        raise TrajectoryError("trajectory has no branches")
    flat, offsets, tokens, finals = _fast_columns(triples) or _checked_columns(triples)
    return Branches(question, interval_tokens, flat, offsets, tokens, finals)


def _interval(value: Any) -> int:
    if _is_missing(value):
        return DEFAULT_INTERVAL
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and float(value).is_integer() and value > 0:
        return int(value)
    raise TrajectoryError(f"interval_tokens must be a positive integer, got {value!r}")


# ------------------------------------------------------------------------- the model
def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _answer_text(answer: Any) -> str | None:
    return answer if answer is None or type(answer) is str else repr(answer)


class ControllerModel(PythonModel):
    """A controller behind the pyfunc interface; see the module docstring for the contract."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.spec: ControllerSpec | None = None
        self._cls: type | None = None
        self._built: dict[float, Controller] = {}
        self._backends: dict[str, Callable[..., dict[str, Any]]] = {"replay": self._solve_replay}

    # ------------------------------------------------------------------ loading
    def load_context(self, context) -> None:
        if _LOADING_REFUSED.get():
            raise MlflowException("refusing to load a controller model while logging it: that would run its source "
                                  "in the logging process")
        config = dict(context.model_config or {})
        if not is_controller_config(config):
            raise MlflowException("this model's model_config does not describe an autotts controller")
        source = (context.artifacts or {}).get(SOURCE_ARTIFACT)
        self.setup(config, source)

    def setup(self, config: Mapping[str, Any], source_path: str | Path | None) -> None:
        """Build the controller from a model config (also used without MLflow's loader)."""
        self.config = dict(config)
        self.spec = spec_from_config(config, source_path)
        self._cls = self.spec.controller_class()
        default = build_controller(self._cls, self.spec.beta, self.spec.params)
        self._built = {default.beta: default}

    @property
    def backends(self) -> list[str]:
        return sorted(self._backends)

    def controller(self, beta: Any = None) -> Controller:
        """The controller at ``beta`` (the logged β when None), built once per β."""
        if beta is None:
            beta = self.spec.beta if self.spec and self.spec.beta is not None else next(iter(self._built))
        try:
            b = check_beta(beta)
        except ControllerError as exc:
            raise _bad_request(str(exc)) from None
        built = self._built.get(b)
        if built is None:
            built = self._built[b] = build_controller(self._cls, b, self.spec.params)
        return built

    # --------------------------------------------------------------- prediction
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        backend = params.get("backend") or "replay"
        solve_row = self._backends.get(backend)
        if solve_row is None:
            raise _bad_request(f"unknown backend {backend!r}; valid backends: {', '.join(self.backends)}")
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        if "question" not in model_input.columns:
            raise _bad_request("input is missing the column 'question' (one row per question)")
        controller = self.controller(params.get("beta"))
        seed = params.get("shuffle_seed")
        seed = -1 if seed is None else int(seed)
        record = bool(params.get("return_actions", False))
        rows = [solve_row(controller, row, seed, record) for row in self._rows(model_input, backend)]
        return self._output(rows, record)

    def _rows(self, df: pd.DataFrame, backend: str) -> list[dict[str, Any]]:
        cols = df.columns
        if backend == "replay" and "trajectory" not in cols:
            raise _bad_request("the replay backend needs the column 'trajectory' (each question's branches: a list of "
                               "[probe_answers, branch_tokens, final_answer] triples)")
        n = len(df)
        questions = df["question"].tolist()
        trajectories = df["trajectory"].tolist() if "trajectory" in cols else [None] * n
        intervals = df["interval_tokens"].tolist() if "interval_tokens" in cols else [None] * n
        return [{"question": q, "trajectory": t, "interval_tokens": i}
                for q, t, i in zip(questions, trajectories, intervals)]

    def _solve_replay(self, controller: Controller, row: dict[str, Any], seed: int, record: bool) -> dict[str, Any]:
        question = row["question"]
        try:
            if _is_missing(question):
                question = ""
            elif type(question) is not str:
                raise TrajectoryError(f"question must be a string, got {type(question).__name__}")
            branches = parse_trajectory(row["trajectory"], question, _interval(row["interval_tokens"]))
        except TrajectoryError as exc:
            return {"error": str(exc), "bad_input": True}
        order = None if seed < 0 else shuffle_order(branches.n_branches, seed)
        episode = RecordingEpisode(branches, order) if record else ReplayEpisode(branches, order)
        try:
            answer = controller.solve(episode)
        except Exception as exc:  # the controller's failure is this row's, not the batch's
            out = {"error": f"controller {self.config.get('controller', '?')!r} raised {type(exc).__name__}: {exc}"}
        else:
            out = {"answer": _answer_text(answer), "tokens": episode.tokens_used,
                   "branches_opened": episode.branches_opened, "intervals": episode.intervals, "error": None}
        if record:
            out["actions"] = json.dumps(episode.actions)
        return out

    @staticmethod
    def _output(rows: list[dict[str, Any]], record: bool) -> pd.DataFrame:
        bad = [(k, r["error"]) for k, r in enumerate(rows) if r.get("bad_input")]
        if bad and len(bad) == len(rows):
            shown = "; ".join(f"row {k}: {e}" for k, e in bad[:5])
            more = f" (and {len(bad) - 5} more rows)" if len(bad) > 5 else ""
            raise _bad_request(f"no row could be replayed: {shown}{more}")
        failed = any(r["error"] is not None for r in rows)
        ints = (lambda v: pd.array(v, dtype="Int64")) if failed else (lambda v: np.array(v, dtype=np.int64))
        data: dict[str, Any] = {
            "answer": _texts([r.get("answer") for r in rows]),
            "tokens": ints([r.get("tokens") for r in rows]),
            "branches_opened": ints([r.get("branches_opened") for r in rows]),
            "intervals": ints([r.get("intervals") for r in rows]),
            "error": _texts([r["error"] for r in rows]),
        }
        if record:
            data["actions"] = _texts([r.get("actions") for r in rows])
        return pd.DataFrame(data, index=pd.RangeIndex(len(rows)), copy=False)  # fresh arrays: nothing to copy


def _texts(values: list[str | None]) -> Any:
    """A text column that keeps None as None: pandas 3 turns a mix of str and None into a
    str column with NaN, which the scoring server would write as an invalid JSON ``NaN``."""
    if None in values and any(v is not None for v in values):
        return pd.Series(values, dtype=object)
    return np.array(values, dtype=object)  # cheaper; all-str or all-None never meets NaN


# ------------------------------------------------------------------- signature, logging
def model_signature(beta: float):
    """Inputs, outputs and params; ``trajectory`` is optional so that live backends (which
    generate instead of replaying) fit the same schema."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([
        ColSpec("string", "question"),
        ColSpec(AnyType(), "trajectory", required=False),
        ColSpec("long", "interval_tokens", required=False),
    ])
    outputs = Schema([
        ColSpec("string", "answer", required=False),
        ColSpec("long", "tokens", required=False),
        ColSpec("long", "branches_opened", required=False),
        ColSpec("long", "intervals", required=False),
        ColSpec("string", "error", required=False),
        ColSpec("string", "actions", required=False),
    ])
    params = ParamSchema([
        ParamSpec("beta", "double", float(beta)),
        ParamSpec("backend", "string", "replay"),
        ParamSpec("shuffle_seed", "long", -1),
        ParamSpec("return_actions", "boolean", False),
    ])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example() -> pd.DataFrame:
    """A tiny replay request: one question, three short branches."""
    return pd.DataFrame({
        "question": ["What is 6 * 7?"],
        "trajectory": [[[["42"], 700, "42"], [["41", "42"], 1200, "42"], [[], 300, "ERR"]]],
        "interval_tokens": [500],
    })


def pinned_requirements() -> list[str]:
    """The model's runtime dependencies at the installed versions (mlflow_autotts itself
    ships as code)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "pandas", "numpy", "scipy")]


def _package_copy(dst: Path) -> Path:
    """A clean copy of the ``mlflow_autotts`` package (no caches) to ship as code."""
    import mlflow_autotts

    pkg = Path(mlflow_autotts.__file__).resolve().parent
    out = dst / "mlflow_autotts"
    shutil.copytree(pkg, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return out


def _tag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def controller_tags(config: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> dict[str, str]:
    """Tags for a logged model or a registered version: what the controller is, its source
    hash, its parameters and the replay metrics it was logged with."""
    tags = {
        "autotts.controller": str(config["controller"]),
        "autotts.source_sha256": str(config["source_sha256"]),
        "autotts.beta": _tag_value(config["beta"]),
        "autotts.params": json.dumps(config.get("params") or {}, sort_keys=True),
    }
    if config.get("registry_name"):
        tags["autotts.registry_name"] = str(config["registry_name"])
    for key, value in (metrics or {}).items():
        tags[f"autotts.metric.{key}"] = _tag_value(value)
    return tags


def _model_kwargs(config: Mapping[str, Any], source_text: str, workdir: Path) -> dict[str, Any]:
    """What ``save_model`` takes for a controller model, with its source and the package
    staged in ``workdir``."""
    staged_source = workdir / "source" / config["source_file"]
    staged_source.parent.mkdir()
    staged_source.write_text(source_text, encoding="utf-8")
    package = _package_copy(workdir)
    return dict(
        python_model=str(CODE_FILE),
        artifacts={SOURCE_ARTIFACT: str(staged_source)},
        model_config=dict(config),
        code_paths=[str(package)],
        signature=model_signature(config["beta"]),
        input_example=input_example(),
        pip_requirements=pinned_requirements(),
        metadata={"autotts_controller": config["controller"], "autotts_format": MODEL_FORMAT},
    )


_LOADING_REFUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("autotts_loading_refused", default=False)


class _PyfuncFlavor:
    """``mlflow.pyfunc`` as the flavor of ``Model.log``, with two of its side effects removed.

    1. ``Model.log`` checks the input example by *loading the model and predicting with it
       in this process* (``mlflow.models.utils._validate_serving_input``): that would import
       the controller's source and run its ``__init__`` and ``solve``. For explorer-written
       candidates, logged by a search process that holds the gold answers, this must not
       happen, so ``_log_model`` passes ``validate_serving_input=False`` (the switch the
       ``transformers`` flavor uses), which ``mlflow.pyfunc.save_model`` does not take. The
       example is still checked against the signature by ``save_model``, without the model.
    2. ``Model.log`` copies a ``model_config`` argument into the run's params, which fails
       (a warning, nothing logged) once a run holds two controllers or its own ``beta``; the
       config travels as ``controller_config`` instead, so the run's params stay the caller's.
    """

    __name__ = "mlflow.pyfunc"

    @staticmethod
    def save_model(validate_serving_input: bool = True, controller_config: Mapping[str, Any] | None = None,
                   **kwargs: Any) -> Any:
        import mlflow

        return mlflow.pyfunc.save_model(model_config=controller_config, **kwargs)


def _log_model(config: Mapping[str, Any], source_text: str, name: str, metrics: Mapping[str, float] | None,
               tags: Mapping[str, str] | None, registered_model_name: str | None, run_id: str | None):
    """Log a controller model from its config and source text, never executing the source
    here; the one code path behind ``log_controller_model`` and ``log_candidate_model``."""
    from mlflow.models import Model

    from mlflow_autotts.tracking.resolve import quiet_downloads

    token = _LOADING_REFUSED.set(True)  # belt and braces: should MLflow load it anyway, refuse
    try:
        with tempfile.TemporaryDirectory(prefix="autotts-model-") as tmp, quiet_downloads():
            kwargs = _model_kwargs(config, source_text, Path(tmp))
            kwargs["controller_config"] = kwargs.pop("model_config")
            return Model.log(artifact_path=None, name=name, flavor=_PyfuncFlavor, flavor_name="pyfunc.ModelFromCode",
                             run_id=run_id, registered_model_name=registered_model_name, validate_serving_input=False,
                             tags={**controller_tags(config, metrics), **dict(tags or {})}, **kwargs)
    finally:
        _LOADING_REFUSED.reset(token)


def log_controller_model(spec: ControllerSpec, name: str = "controller", metrics: Mapping[str, float] | None = None,
                         tags: Mapping[str, str] | None = None, registered_model_name: str | None = None,
                         run_id: str | None = None):
    """Log ``spec`` as a models-from-code pyfunc (a logged model, linked to ``run_id`` or
    else the active run, if any); returns MLflow's ``ModelInfo``. ``metrics`` are replay
    metrics to record as tags.

    Imports and builds the controller to validate it: trusted controllers only (built-ins,
    the user's own files); explorer-written candidates go through ``log_candidate_model``."""
    config, source = model_config_for(spec)
    return _log_model(config, source.text, name, metrics, tags, registered_model_name, run_id)


def log_candidate_model(source: str, class_name: str, label: str, beta: float, params: dict | None = None,
                        uses_beta: bool = True, metrics: Mapping[str, float] | None = None,
                        tags: Mapping[str, str] | None = None, name: str = "controller",
                        registered_model_name: str | None = None, run_id: str | None = None):
    """Log an untrusted candidate's source as a controller model without importing or
    running it in this process; returns MLflow's ``ModelInfo``.

    ``label`` and ``uses_beta`` are what the sandbox reported for the class; ``params`` and
    ``beta`` are what the candidate was scored with. The model is the same as one logged by
    ``log_controller_model`` (same config layout, artifacts, signature, tags); it runs the
    source only where it is loaded (a fresh process, ``mlflow models serve``). ``run_id``
    links it to that run without making it active (safe from worker threads)."""
    config = candidate_config(source, class_name, label, beta, params, uses_beta)
    return _log_model(config, source, name, metrics, tags, registered_model_name, run_id)


def save_controller_model(spec: ControllerSpec, path: str | Path) -> Path:
    """Write the same model to a local folder (no tracking server), e.g. for benchmarks."""
    import mlflow

    config, source = model_config_for(spec)
    with tempfile.TemporaryDirectory(prefix="autotts-model-") as tmp:
        mlflow.pyfunc.save_model(path=str(path), **_model_kwargs(config, source.text, Path(tmp)))
    return Path(path)


def load_controller_model(model_uri: str):
    """``mlflow.pyfunc.load_model`` with autotts errors: a URI that does not resolve or a
    model that is not a controller gives a one-line ``ControllerError``."""
    from mlflow_autotts.tracking.resolve import describe_model_uri

    import mlflow

    describe_model_uri(model_uri)  # clear errors for missing models, aliases, foreign models
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise ControllerError(f"cannot load {model_uri}: {exc.message.splitlines()[0]}") from None


__all__ = [
    "ControllerModel", "TrajectoryError", "parse_trajectory", "log_controller_model", "log_candidate_model",
    "save_controller_model", "candidate_config",
    "load_controller_model",
    "model_signature", "input_example", "controller_tags", "model_config_for", "spec_from_config",
    "is_controller_config",
]
