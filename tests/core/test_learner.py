"""The learning agent's model: Beta posteriors by incident signature, ranked deterministically."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onduty.think.learner import (
    IncidentFeatures,
    Mode,
    Outcome,
    Posterior,
    Ranker,
    SplitMix64,
    beta_quantile,
    restart_bucket,
    seed_from,
)

PAYMENTS = IncidentFeatures("HighErrorRate", "payments", recent_deploy=True)
ACTIONS = ["process.restart", "deploy.rollback", "scale.up"]
outcomes = st.lists(st.sampled_from(list(Outcome)), max_size=30)


def learned(history: dict[str, list[Outcome]], features: IncidentFeatures = PAYMENTS) -> Posterior:
    posterior = Posterior()
    for action, seen in history.items():
        for outcome in seen:
            posterior.observe(features, action, outcome)
    return posterior


def test_the_rationale_says_how_often_the_action_verified_and_where() -> None:
    posterior = learned({"deploy.rollback": [Outcome.VERIFIED] * 9 + [Outcome.UNDONE] * 2})
    top = Ranker(posterior, Mode.UCB).rank(PAYMENTS, ["deploy.rollback"], seed=0)[0]
    assert top.rationale.startswith(
        "deploy.rollback verified 9 of 11 times for HighErrorRate on payments after a deploy"
    )
    assert top.evidence == 11
    assert top.estimate == pytest.approx(10 / 13)
    assert top.interval[0] < top.estimate < top.interval[1]


def test_a_fine_signature_with_little_evidence_backs_off_to_a_coarser_one() -> None:
    posterior = Posterior(min_evidence=3)
    elsewhere = IncidentFeatures("HighErrorRate", "search", recent_deploy=True)
    for _ in range(4):
        posterior.observe(elsewhere, "deploy.rollback", Outcome.VERIFIED)
    posterior.observe(PAYMENTS, "deploy.rollback", Outcome.VERIFY_FAILED)
    found = posterior.evidence(PAYMENTS, "deploy.rollback")
    assert dict(found.signature) == {"alertname": "HighErrorRate", "recent_deploy": "yes"}
    assert (found.record.successes, found.record.failures) == (4, 1)


def test_an_action_never_seen_keeps_the_prior() -> None:
    ranked = Ranker(Posterior(), Mode.UCB).rank(PAYMENTS, ["scale.up"], seed=0)
    assert ranked[0].estimate == 0.5 and ranked[0].evidence == 0
    assert "no recorded outcome" in ranked[0].rationale


def test_only_verified_counts_as_success() -> None:
    assert [o.success for o in Outcome] == [True, False, False, False, False]


def test_restart_buckets_and_unknown_buckets_are_refused() -> None:
    assert [restart_bucket(h) for h in (None, 0.5, 3, 48)] == [
        "never",
        "under-1h",
        "under-1d",
        "older",
    ]
    with pytest.raises(ValueError, match="since_restart"):
        IncidentFeatures("A", "s", False, since_restart="yesterday")


def test_the_generator_is_seeded_by_the_event_id() -> None:
    assert seed_from("ev-1") == seed_from("ev-1") != seed_from("ev-2")
    first = SplitMix64(seed_from("ev-1"))
    again = SplitMix64(seed_from("ev-1"))
    assert [first.next64() for _ in range(5)] == [again.next64() for _ in range(5)]


def test_beta_draws_and_quantiles_match_the_distribution() -> None:
    generator = SplitMix64(7)
    draws = [generator.beta(2, 5) for _ in range(5000)]
    assert sum(draws) / len(draws) == pytest.approx(2 / 7, abs=0.01)
    assert beta_quantile(0.5, 3, 3) == pytest.approx(0.5, abs=1e-9)
    assert beta_quantile(0.95, 1, 1) == pytest.approx(0.95, abs=1e-9)


@given(st.dictionaries(st.sampled_from(ACTIONS), outcomes), st.integers(0, 2**64 - 1))
def test_same_inputs_and_seed_give_the_same_ranking(
    history: dict[str, list[Outcome]], seed: int
) -> None:
    for mode in Mode:
        first = Ranker(learned(history), mode).rank(PAYMENTS, ACTIONS, seed)
        again = Ranker(learned(history), mode).rank(PAYMENTS, ACTIONS, seed)
        assert first == again
        assert sorted(r.action for r in first) == sorted(ACTIONS)
        for ranked in first:
            assert 0 <= ranked.interval[0] <= ranked.estimate <= ranked.interval[1] <= 1
            assert 0 <= ranked.score <= 1


@given(outcomes, st.randoms(use_true_random=False))
def test_posterior_updates_commute(seen: list[Outcome], shuffler: object) -> None:
    shuffled = list(seen)
    shuffler.shuffle(shuffled)  # type: ignore[attr-defined]
    assert learned({"deploy.rollback": seen}).table == learned({"deploy.rollback": shuffled}).table


@given(
    st.integers(0, 40),
    st.integers(0, 40),
    st.integers(0, 5),
    st.integers(0, 5),
    st.booleans(),
)
def test_a_strictly_better_record_never_ranks_lower_under_ucb(
    successes: int, failures: int, more: int, fewer: int, better_first: bool
) -> None:
    """`better` has at least as many verified and at most as many failed outcomes as `worse`,
    and differs in one at least."""
    if more == 0 and (fewer == 0 or failures == 0):
        more = 1
    worse = [Outcome.VERIFIED] * successes + [Outcome.VERIFY_FAILED] * failures
    better = [Outcome.VERIFIED] * (successes + more) + [Outcome.ACTION_FAILED] * max(
        0, failures - fewer
    )
    posterior = learned({"worse": worse, "better": better})
    order = ["better", "worse"] if better_first else ["worse", "better"]
    ranked = [r.action for r in Ranker(posterior, Mode.UCB).rank(PAYMENTS, order, seed=0)]
    assert ranked.index("better") < ranked.index("worse")
