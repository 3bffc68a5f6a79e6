import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta as beta_dist

from mlflow_autotts.controllers.voting import Tally, beta_confidence, beta_confidence_of_weights, plurality, vote_stats


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


def test_confidence_of_weights_is_the_table_at_whole_counts():
    for top1 in range(0, 70):
        for top2 in range(0, top1 + 1):
            assert beta_confidence_of_weights(float(top1), float(top2)) == beta_confidence(top1, top2)


counts = st.floats(min_value=0.0, max_value=64.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(counts, counts, st.floats(min_value=0.0, max_value=1.0))
def test_confidence_of_weights_is_bounded_and_monotone(top1, top2, step):
    """More weight on the leader never lowers the confidence, more on the runner-up never
    raises it, and it stays between the whole-count values around it."""
    c = beta_confidence_of_weights(top1, top2)
    assert 0.0 <= c <= 1.0
    assert beta_confidence_of_weights(top1 + step, top2) >= c - 1e-12
    assert beta_confidence_of_weights(top1, top2 + step) <= c + 1e-12
    if top1 >= 1:
        a, b = int(top1), int(top2)
        corners = [beta_confidence(a + i, b + j) for i in (0, 1) for j in (0, 1)]
        assert min(corners) - 1e-12 <= c <= max(corners) + 1e-12


def test_confidence_of_weights_is_close_to_the_exact_beta_between_counts():
    rng = random.Random(3)
    for _ in range(500):
        top1, top2 = rng.uniform(1, 40), rng.uniform(0, 40)
        exact = float(1 - beta_dist.cdf(0.5, top1 + 1, top2 + 1))
        assert abs(beta_confidence_of_weights(top1, top2) - exact) < 0.015  # max seen: 0.011
