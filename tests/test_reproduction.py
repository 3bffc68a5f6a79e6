"""Exact reproduction of the paper evaluator's numbers on the published AIME 2024 data.

The numbers are the reference table of ../shared/data/autotts-replay/README.md: accuracy
to two decimals and mean tokens to the integer, 100 shuffles.
"""

import pytest

from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.replay.runner import ReplayConfig, evaluate_many

COLUMNS = [ControllerSpec("sc", None, {"n": 64}), ControllerSpec("asc"), ControllerSpec("esc"),
           ControllerSpec("parallel_probe")] + [ControllerSpec("cmc", b) for b in (0.0, 0.25, 0.5, 0.75, 1.0)]
REFERENCE = {
    "Qwen3-0.6B": [(21.43, 1008629), (21.40, 805491), (21.43, 986723), (21.83, 773782), (15.13, 56714),
                   (17.17, 174733), (19.20, 283597), (19.97, 407947), (20.93, 542155)],
    "Qwen3-1.7B": [(72.50, 1025805), (72.33, 482564), (72.47, 909205), (66.03, 745425), (60.07, 55711),
                   (67.30, 180104), (68.50, 276267), (69.50, 382815), (70.37, 499094)],
    "Qwen3-4B": [(80.00, 886830), (80.00, 214189), (80.00, 528935), (79.73, 688873), (79.33, 47245),
                 (80.83, 163004), (81.97, 236735), (83.13, 325504), (83.53, 424878)],
    "Qwen3-8B": [(80.37, 910813), (80.37, 226033), (80.37, 459360), (81.47, 730781), (81.40, 48796),
                 (83.47, 175008), (84.27, 255294), (85.07, 352368), (85.77, 467435)],
}


@pytest.fixture(scope="module")
def published(data_dir):
    from mlflow_autotts.data.uris import load_datasets

    return load_datasets([str(data_dir / m / "aime24.json") for m in REFERENCE])


def test_reference_matrix_reproduces_exactly(published):
    results = evaluate_many(COLUMNS, published, ReplayConfig(shuffles=100, progress=False), keep_episodes=False)
    got = {}
    for r in results:
        got.setdefault(r.data.split("/")[0], []).append((round(r.accuracy, 2), round(r.mean_tokens)))
    for model, expected in REFERENCE.items():
        assert got[model] == expected, model


def test_one_worker_and_a_pool_give_identical_episodes(published):
    spec = [ControllerSpec("cmc", 0.75)]
    one = evaluate_many(spec, published[1:2], ReplayConfig(shuffles=6, workers=1, progress=False))[0]
    two = evaluate_many(spec, published[1:2], ReplayConfig(shuffles=6, workers=2, chunk_shuffles=1, in_process_below=0,
                                                         progress=False))[0]  # 180 episodes: pool forced
    assert one.episodes.equals(two.episodes)
    assert (one.accuracy, one.mean_tokens) == (two.accuracy, two.mean_tokens)
    assert list(one.episodes.columns) == ["dataset", "problem", "shuffle", "answer", "correct", "tokens",
                                          "branches_opened", "intervals"]
    assert len(one.episodes) == 6 * 30
    assert one.episodes["tokens"].sum() / 6 / 30 == pytest.approx(one.mean_tokens)
