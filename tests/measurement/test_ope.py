"""Off-policy estimators on synthetic bandit data where the true policy value is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.measurement import ope

K = 3


def _bandit(n: int = 20_000, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    # true P(reward = 1 | x, a)
    logits = np.column_stack([-1.0 + x[:, 0], -1.2 + 0.8 * x[:, 1], -0.8 - 0.5 * x[:, 0]])
    p = 1 / (1 + np.exp(-logits))
    # logging policy: a softmax on x (every action has probability > 0)
    s = np.column_stack([0.3 * x[:, 0], 0.5 * x[:, 1], np.zeros(n)])
    mu_all = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    a = np.array([rng.choice(K, p=row) for row in mu_all])
    r = (rng.random(n) < p[np.arange(n), a]).astype(np.float64)
    return {"x": x, "p": p, "mu_all": mu_all, "a": a, "r": r}


@pytest.fixture(scope="module")
def bandit() -> dict[str, np.ndarray]:
    return _bandit()


def _targets(b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(b["a"])
    greedy = np.zeros((n, K))
    greedy[np.arange(n), b["p"].argmax(axis=1)] = 1.0  # the best action per context
    const = np.zeros((n, K))
    const[:, 2] = 1.0
    return {"greedy": greedy, "constant": const, "uniform": np.full((n, K), 1 / K)}


@pytest.mark.parametrize("policy", ["greedy", "constant", "uniform"])
def test_estimates_cover_the_truth(bandit: dict[str, np.ndarray], policy: str) -> None:
    pi = _targets(bandit)[policy]
    truth = float(np.mean(np.sum(pi * bandit["p"], axis=1)))
    n = len(bandit["a"])
    mu = bandit["mu_all"][np.arange(n), bandit["a"]]
    for kind in ("mean", "lgbm"):
        q = ope.cross_fit_rewards(bandit["x"], bandit["a"], bandit["r"], K, kind)
        ests = ope.evaluate(bandit["r"], mu, bandit["a"], pi, q)
        by = {e.method: e for e in ests}
        assert set(by) == {"IPS", "SNIPS", "DM", "DR"}
        for m in ("IPS", "SNIPS", "DR"):
            e = by[m]
            assert e.contains(truth), (policy, kind, m, e, truth)
            assert 0 < e.high - e.low < 0.05
            assert 0 < e.ess <= n
    # the greedy policy is better than logging, and the estimators say so
    if policy == "greedy":
        assert by["DR"].low > float(np.mean(bandit["r"]))


def test_lgbm_reward_model_tightens_dr(bandit: dict[str, np.ndarray]) -> None:
    pi = _targets(bandit)["greedy"]
    n = len(bandit["a"])
    mu = bandit["mu_all"][np.arange(n), bandit["a"]]
    q_mean = ope.cross_fit_rewards(bandit["x"], bandit["a"], bandit["r"], K, "mean")
    q_lgbm = ope.cross_fit_rewards(bandit["x"], bandit["a"], bandit["r"], K, "lgbm")
    se_mean = ope.doubly_robust(bandit["r"], mu, bandit["a"], pi, q_mean).se
    se_lgbm = ope.doubly_robust(bandit["r"], mu, bandit["a"], pi, q_lgbm).se
    assert se_lgbm < se_mean


def test_bootstrap_and_ess() -> None:
    b = _bandit(4000, seed=3)
    n = len(b["a"])
    mu = b["mu_all"][np.arange(n), b["a"]]
    truth = float(np.mean(b["p"][:, 2]))
    target = (b["a"] == 2).astype(np.float64)  # pi(logged action) for "always action 2"
    for est in (ope.ips, ope.snips):
        e = est(b["r"], mu, target, alpha=0.01, n_boot=300)  # 99 %: one seed, 2 estimators
        assert e.contains(truth), e
        assert e.low < e.value < e.high
    w = np.array([1.0, 1.0, 1.0, 1.0])
    assert ope.effective_sample_size(w) == pytest.approx(4.0)
    assert ope.effective_sample_size(np.array([4.0, 0, 0, 0])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ope.ips(np.ones(2), np.array([0.0, 0.5]), np.ones(2))


def test_evaluate_frame_with_policy_specs(bandit: dict[str, np.ndarray]) -> None:
    n = 6000
    names = np.array(["a", "b", "c"])
    df = pd.DataFrame(
        {
            "action": names[bandit["a"][:n]],
            "propensity": bandit["mu_all"][np.arange(n), bandit["a"][:n]],
            "reward": bandit["r"][:n],
            "x_0": bandit["x"][:n, 0],
            "x_1": bandit["x"][:n, 1],
            "x_seg": np.where(bandit["x"][:n, 0] > 0, "hi", "lo"),
            "best": names[bandit["p"][:n].argmax(axis=1)],
        }
    )
    t = ope.evaluate_frame(df, ["constant:c", "uniform", "column:best"], "mean")
    assert set(t["policy"]) >= {"constant:c", "uniform", "column:best"}
    dr = t[(t["policy"] == "column:best") & (t["method"] == "DR")].iloc[0]
    truth = float(np.mean(bandit["p"][:n].max(axis=1)))
    assert dr["low"] <= truth <= dr["high"]
    with pytest.raises(ope.UnsupportedPolicyError, match=r"never taken in the log \(\['zzz'\]\)"):
        ope.evaluate_frame(df, ["constant:zzz"])
    with pytest.raises(ValueError, match="lacks"):
        ope.evaluate_frame(df.drop(columns=["propensity"]), ["uniform"])
    probs = df.assign(pi_a=0.2, pi_b=0.3, pi_c=0.5)
    t2 = ope.evaluate_frame(probs, ["probs:pi_"])
    assert (t2["policy"] == "probs:pi_").sum() == len(ope.ALL_METHODS)


def test_candidate_actions_absent_from_the_log_are_refused_or_earn_no_weight(
    bandit: dict[str, np.ndarray],
) -> None:
    n = 6000
    names = np.array(["a", "b", "c"])
    df = pd.DataFrame(
        {
            "action": names[bandit["a"][:n]],
            "propensity": bandit["mu_all"][np.arange(n), bandit["a"][:n]],
            "reward": bandit["r"][:n],
            # the candidate picks "c" on half the rows and an action never logged ("d") on the rest
            "cand": np.where(np.arange(n) % 2 == 0, "c", "d"),
        }
    )
    with pytest.raises(ope.UnsupportedPolicyError, match=r"\['d'\]\), on 3,000 rows"):
        ope.evaluate_frame(df, ["column:cand"])
    t = ope.evaluate_frame(df, ["column:cand"], unsupported="warn")
    assert "never taken" in t.attrs["notes"][0]
    t = t.set_index("method")
    assert t.loc["IPS", "match"] == pytest.approx(float(np.mean(df["action"] == df["cand"])))
    # IPS only counts the "c" half: about half the value of always playing "c"
    truth_c = float(np.mean(bandit["p"][:n, 2]))
    assert t.loc["IPS", "low"] < truth_c / 2 < t.loc["IPS", "high"]


def test_withdrawn_actions_are_recognised() -> None:
    sup = pd.Series(
        [
            "[]",
            '[["frequency_cap", null, "push"]]',  # a channel at its cap: a normal suppression
            '[["frequency_cap", "OFF001", "email"]]',  # the chosen action, withdrawn
            '[["no_consent", null, "sms"], ["frequency_cap", "OFF002", "push"]]',
        ]
    )
    assert ope.withdrawn(sup).tolist() == [False, False, True, True]


def test_paired_comparison_against_a_reference_policy(bandit: dict[str, np.ndarray]) -> None:
    n = 6000
    names = np.array(["a", "b", "c"])
    df = pd.DataFrame(
        {
            "action": names[bandit["a"][:n]],
            "propensity": bandit["mu_all"][np.arange(n), bandit["a"][:n]],
            "reward": bandit["r"][:n],
            "best": names[bandit["p"][:n].argmax(axis=1)],
        }
    )
    t = ope.evaluate_frame(df, ["column:best", "constant:c"], compare_to="constant:c")
    dr = t[t["method"] == "DR"].set_index("policy")
    diff = t[t["method"] == "DR - constant:c"].set_index("policy").loc["column:best"]
    assert diff["value"] == pytest.approx(
        dr.loc["column:best", "value"] - dr.loc["constant:c", "value"]
    )
    truth = float(np.mean(bandit["p"][:n].max(axis=1) - bandit["p"][:n, 2]))
    assert diff["low"] <= truth <= diff["high"]
    # paired: narrower than the two separate intervals put together
    assert diff["high"] - diff["low"] < (dr["high"] - dr["low"]).sum()
    with pytest.raises(ValueError, match="compare_to"):
        ope.evaluate_frame(df, ["column:best"], compare_to="constant:a")


def test_reliability_flag_for_thin_support() -> None:
    """A candidate that departs from a mostly greedy logger rests on a few heavy rows."""
    rng = np.random.default_rng(5)
    n, k = 20_000, 20
    greedy = rng.integers(0, k, n)
    explore = rng.random(n) < 0.2
    a = np.where(explore, rng.integers(0, k, n), greedy)
    mu = np.where(a == greedy, 0.8 + 0.2 / k, 0.2 / k)
    r = (rng.random(n) < 0.03).astype(float)
    other = (greedy + 1) % k  # never the greedy action
    df = pd.DataFrame({"action": a.astype(str), "propensity": mu, "reward": r,
                       "greedy": greedy.astype(str), "other": other.astype(str)})  # fmt: skip
    t = ope.evaluate_frame(df, ["column:greedy", "column:other"]).set_index(["policy", "method"])
    assert t.loc[("column:greedy", "DR"), "reliable"]
    assert t.loc[("column:greedy", "DR"), "ess_events"] > 300
    assert not t.loc[("column:other", "DR"), "reliable"]
    assert t.loc[("column:other", "DR"), "ess_events"] < ope.MIN_EFFECTIVE_EVENTS
