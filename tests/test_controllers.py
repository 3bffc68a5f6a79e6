import textwrap

import pytest

from mlflow_autotts.controllers.base import Controller, build_controller
from mlflow_autotts.controllers.cmc import cmc_schedule
from mlflow_autotts.controllers.loading import ControllerSpec, load_controller_class
from mlflow_autotts.controllers.registry import controller_names, get_controller_class, register_controller
from mlflow_autotts.errors import ControllerError
from mlflow_autotts.replay.episode import RecordingEpisode, ReplayEpisode
from tests.helpers import make_branches, random_set


def full(answer, tokens=1000):
    return ([answer] * (tokens // 500), tokens, answer)


def test_registry_lists_the_reference_controllers_and_rejects_duplicates():
    assert {"sc", "asc", "esc", "parallel_probe", "cmc"} <= set(controller_names())
    with pytest.raises(ControllerError, match="unknown controller .nope.; valid: .*cmc"):
        get_controller_class("nope")

    class Dup(Controller):
        name = "sc"

    with pytest.raises(ValueError, match="already registered"):
        register_controller(Dup)


def test_sc_reads_n_branches_and_votes():
    br = make_branches([full("a"), full("b"), full("b"), full("a"), full("c")])
    ep = ReplayEpisode(br)
    assert build_controller(get_controller_class("sc"), params={"n": 4}).solve(ep) == "a"  # tie: first seen
    assert ep.branches_opened == 4 and ep.tokens_used == 4000
    ep = ReplayEpisode(br)
    assert build_controller(get_controller_class("sc"), params={"n": 64}).solve(ep) == "a"
    assert ep.branches_opened == 5  # ran out of branches: votes what it has


def test_asc_stops_once_confident():
    br = make_branches([full("a")] * 10)
    ep = ReplayEpisode(br)
    assert build_controller(get_controller_class("asc")).solve(ep) == "a"
    # 1 - I_0.5(k+1, 1) = 1 - 0.5^(k+1) > 0.95 first at k = 4 agreeing votes
    assert ep.branches_opened == 4


def test_esc_returns_the_first_unanimous_window():
    br = make_branches([full("a"), full("b")] + [full("c")] * 2 + [full("d")] * 4)
    ep = ReplayEpisode(br)
    assert build_controller(get_controller_class("esc"), params={"window": 2}).solve(ep) == "c"
    assert ep.branches_opened == 4


def test_parallel_probe_prunes_off_track_branches_and_stops_on_a_stable_winner():
    agree = (["x", "a", "a", "a", "a", "a", "a", "a", "a", "a"], 6000, "a")
    stray = (["b"] * 10, 6000, "b")
    br = make_branches([agree, agree, stray])
    ctl = build_controller(get_controller_class("parallel_probe"),
                           params={"chains": 3, "T": 3, "patience": 2, "warm_up": 1})
    ep = RecordingEpisode(br)
    assert ctl.solve(ep) == "a"
    probes_of_stray = sum(1 for kind, i in ep.actions if i == 2)
    assert probes_of_stray < sum(1 for kind, i in ep.actions if i == 0)


def test_cmc_schedule_is_monotone_in_beta():
    lo, hi = cmc_schedule(0.0), cmc_schedule(1.0)
    assert (lo.n_init, lo.max_branches, lo.warm_up, lo.burst) == (2, 4, 2, 1)
    assert (hi.n_init, hi.max_branches, hi.warm_up, hi.burst) == (8, 64, 10, 3)
    assert cmc_schedule(0.25).n_init == 4  # round(3.5) -> 4: halves go to even
    prev = cmc_schedule(0.0)
    for k in range(1, 21):
        cur = cmc_schedule(k / 20)
        assert cur.max_branches >= prev.max_branches and cur.conf_thresh >= prev.conf_thresh
        prev = cur


@pytest.mark.parametrize("name", ["sc", "asc", "esc", "parallel_probe", "cmc"])
def test_reference_controllers_answer_every_synthetic_problem(name):
    ts = random_set(n_problems=5, n_branches=20, seed=3)
    ctl = build_controller(get_controller_class(name))
    for p in ts.problems:
        ans = ctl.solve(ReplayEpisode(p.branches))
        assert isinstance(ans, str)


@pytest.mark.parametrize("beta", [-0.1, 1.5, "high", float("nan"), None])
def test_invalid_beta_is_a_controller_error(beta):
    if beta is None:
        assert build_controller(get_controller_class("cmc"), None).beta == 0.5
        return
    with pytest.raises(ControllerError, match="invalid beta"):
        build_controller(get_controller_class("cmc"), beta)


def test_unknown_parameter_names_the_valid_ones():
    with pytest.raises(ControllerError, match="has no parameter 'm'; valid: n"):
        build_controller(get_controller_class("sc"), params={"m": 3})
    with pytest.raises(ControllerError, match="positive integer"):
        build_controller(get_controller_class("sc"), params={"n": 0})


def test_a_source_file_is_named_from_its_ast_and_never_imported_here(tmp_path):
    mark = tmp_path / "ran"
    src = tmp_path / "mine.py"
    src.write_text(textwrap.dedent(f"""
        open({str(mark)!r}, "w").write("imported")
        from mlflow_autotts.controllers.base import Controller

        class FirstAnswer(Controller):
            name = "first"

            def solve(self, episode):
                return episode.get_new_branch_final_answer()
    """))
    spec = ControllerSpec(str(src), 0.3)
    assert not spec.is_builtin
    assert spec.label == "first" and ControllerSpec(f"{src}:FirstAnswer").label == "first"
    for call in (spec.build, spec.controller_class, lambda: load_controller_class(str(src))):
        with pytest.raises(ControllerError, match="not built in: its code runs only in the sandbox"):
            call()
    assert not mark.exists()

    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ControllerError, match="defines no Controller subclass"):
        ControllerSpec(str(empty)).label
    with pytest.raises(ControllerError, match="no top-level class 'Nope'"):
        ControllerSpec(f"{src}:Nope").label
    with pytest.raises(ControllerError, match="cannot be read"):
        ControllerSpec(str(tmp_path / "missing.py")).label
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    with pytest.raises(ControllerError, match="does not parse \\(line 1\\)"):
        ControllerSpec(str(broken)).label
    two = tmp_path / "two.py"
    two.write_text("class A(Controller): pass\nclass B(cmc.CMC): pass\nclass C: name = 'c'\n")
    with pytest.raises(ControllerError, match="several controllers \\(A, B\\)"):
        ControllerSpec(str(two)).label
    assert ControllerSpec(f"{two}:C").label == "c"
