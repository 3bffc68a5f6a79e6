import random
from collections import Counter

from scipy.stats import beta as beta_dist

from mlflow_autotts.controllers.voting import Tally, beta_confidence, plurality, vote_stats


def counter_stats(answers):
    common = Counter(answers).most_common(2)
    return common[0][0], common[0][1], common[1][1] if len(common) > 1 else 0


def test_plurality_and_tally_agree_with_counter_on_random_votes():
    rng = random.Random(1)
    for _ in range(2000):
        answers = [rng.choice("abcde") for _ in range(rng.randint(1, 30))]
        assert plurality(answers) == Counter(answers).most_common(1)[0][0]
        assert vote_stats(answers) == counter_stats(answers)
        t = Tally()
        for k, a in enumerate(answers, 1):
            t.add(a)
            assert (t.winner, t.top1, t.top2) == counter_stats(answers[:k])


def test_ties_go_to_the_first_appearance_like_counter():
    assert plurality(["a", "b", "b", "a"]) == "a"
    assert plurality([]) is None
    assert Tally().winner is None


def test_beta_confidence_equals_scipy_bit_for_bit():
    for top1 in range(1, 140, 3):
        for top2 in range(0, top1 + 1, 2):
            assert beta_confidence(top1, top2) == float(1 - beta_dist.cdf(0.5, top1 + 1, top2 + 1))
    assert beta_confidence(0, 0) == 0.0
