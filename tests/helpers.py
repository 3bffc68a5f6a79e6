"""Small synthetic trajectory sets for fast unit tests."""

from __future__ import annotations

import hashlib
import importlib.util
import random
import sys
from pathlib import Path

from dataclasses import dataclass

from mlflow_autotts.controllers.loading import ControllerSpec, pick_controller_class, split_source_ref
from mlflow_autotts.data.trajectory import Branches, Problem, Provenance, TrajectorySet


def make_branches(specs: list[tuple[list[str], int, str]], question: str = "q", interval: int = 500) -> Branches:
    """Branches from ``(probe_answers, branch_tokens, final_answer)`` triples."""
    return Branches.from_lists(question, interval, [s[0] for s in specs], [s[1] for s in specs], [s[2] for s in specs])


def random_set(n_problems: int = 6, n_branches: int = 16, seed: int = 0, name: str = "Synth/toy") -> TrajectorySet:
    """Problems whose branches drift toward a right or wrong answer, like real trajectories."""
    rng = random.Random(seed)
    problems = []
    for p in range(n_problems):
        gold = str(p)
        specs = []
        for _ in range(n_branches):
            final = gold if rng.random() < 0.6 else rng.choice(["x", "y", "ERR"])
            n_probes = rng.randint(0, 12)
            probes = [final if rng.random() < (k + 1) / (n_probes + 1) else rng.choice(["ERR", "x", gold])
                      for k in range(n_probes)]
            tokens = max(0, 500 * n_probes + rng.randint(-400, 700))
            specs.append((probes, tokens, final))
        problems.append(Problem(make_branches(specs, question=f"question {p}"), gold))
    model, _, bench = name.partition("/")
    return TrajectorySet(problems, Provenance(model, bench, source=name))


def import_source(path: str | Path, class_name: str | None = None) -> type:
    """The controller class a source file defines, imported in *this* (test) process.

    Only tests may do this, with sources they wrote or rendered themselves: the product never
    turns a controller source into a class outside the sandbox child."""
    path = Path(path)
    source = path.read_bytes()
    mod_name = f"autotts_test_controller_{hashlib.sha256(source).hexdigest()[:16]}"
    module = sys.modules.get(mod_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    return pick_controller_class(module, class_name, str(path))


@dataclass(frozen=True)
class InProcessSourceSpec(ControllerSpec):
    """Tests only: a source file the test wrote, replayed by the in-process runner as if it
    were built in, to compare the sandbox's numbers with the runner's."""

    @property
    def is_builtin(self) -> bool:
        return True

    def controller_class(self) -> type:
        path, class_name = split_source_ref(self.ref)
        return import_source(path, class_name)

    @property
    def label(self) -> str:
        cls = self.controller_class()
        return getattr(cls, "name", "") or cls.__name__


def runner_spec(ref: str, beta: float | None = None) -> ControllerSpec:
    """A spec for the in-process runner: a built-in name, or a test's own source file."""
    return InProcessSourceSpec(ref, beta) if split_source_ref(ref) else ControllerSpec(ref, beta)
