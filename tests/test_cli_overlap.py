"""``run_beside``: work in a forked child while the parent prepares; results and errors come back."""

from __future__ import annotations

import os
import time

import pytest

from mlflow_autotts.cli.overlap import CHILD_NICENESS, ChildFailedError, can_fork, run_beside
from mlflow_autotts.errors import AutoTTSError, DataError
from tests.conftest import require


@pytest.fixture(autouse=True)
def _fork():
    require(can_fork(), "run_beside forks only where fork exists (elsewhere it runs sequentially: last test)")


def test_work_runs_in_a_child_while_the_parent_runs_meanwhile():
    parent, seen = os.getpid(), []
    result = run_beside(lambda: (os.getpid(), [1, 2, 3]), lambda: seen.append(os.getpid()))
    assert result[1] == [1, 2, 3]
    assert result[0] != parent and seen == [parent]


def test_the_child_yields_the_cpu_to_the_parent_and_the_parent_keeps_its_priority():
    mine = os.nice(0)
    assert run_beside(lambda: os.nice(0), lambda: None) == min(19, mine + CHILD_NICENESS)
    assert os.nice(0) == mine


def test_an_autotts_error_keeps_its_message_and_exit_code():
    def work():
        raise DataError("x.json", "not valid JSON", problem=3)  # its __init__ does not survive pickling

    with pytest.raises(AutoTTSError) as info:
        run_beside(work, lambda: None)
    assert str(info.value) == "x.json: problem 3: not valid JSON" and info.value.exit_code == 2


def test_a_picklable_error_comes_back_as_it_was():
    def work():
        raise ValueError("bad value 7")

    with pytest.raises(ValueError, match="bad value 7"):
        run_beside(work, lambda: None)


def test_an_unpicklable_error_comes_back_with_the_childs_traceback():
    class Local(Exception):  # a local class cannot be pickled
        pass

    def work():
        raise Local("deep down")

    with pytest.raises(ChildFailedError, match="(?s)worker process failed:.*Local: deep down"):
        run_beside(work, lambda: None)


def test_an_unpicklable_result_is_an_error():
    with pytest.raises(ChildFailedError, match="could not be sent back"):
        run_beside(lambda: (lambda: 1), lambda: None)


def test_a_child_that_dies_without_a_result():
    with pytest.raises(ChildFailedError, match="exited with code 3 without a result"):
        run_beside(lambda: os._exit(3), lambda: None)


def test_an_error_in_meanwhile_stops_the_child():
    def meanwhile():
        raise KeyError("parent side")

    t = time.perf_counter()
    with pytest.raises(KeyError, match="parent side"):
        run_beside(lambda: time.sleep(60), meanwhile)  # work of a minute, stopped at once
    assert time.perf_counter() - t < 30


def test_without_fork_the_work_runs_here_first(monkeypatch):
    from mlflow_autotts.cli import overlap

    order: list[str] = []
    monkeypatch.setattr(overlap, "can_fork", lambda: False)
    assert overlap.run_beside(lambda: order.append("work") or os.getpid(), lambda: order.append("meanwhile")) \
        == os.getpid()
    assert order == ["work", "meanwhile"]
