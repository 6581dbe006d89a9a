"""The synthetic world: deterministic, shaped as promised, consistent with its ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contracts.vocabulary import DEFAULT_CHANNELS as CHANNELS
from training.datasets.world import HOUR_PROFILES, World, WorldConfig, generate_world

#: what the generator writes: the contract's four raw tables and the ground truth
FILES = (
    "source/customers",
    "source/offers",
    "source/events",
    "source/messages",
    "truth/truth_customers",
    "truth/offers",
)


class TestDeterminism:
    def test_same_seed_same_output(self, tmp_path: Path) -> None:
        cfg = WorldConfig(n_customers=800, seed=3)
        generate_world(cfg, tmp_path / "a")
        generate_world(cfg, tmp_path / "b")
        for name in FILES:
            a = pd.read_parquet(tmp_path / "a" / f"{name}.parquet")
            b = pd.read_parquet(tmp_path / "b" / f"{name}.parquet")
            pd.testing.assert_frame_equal(a, b, check_exact=True)

    def test_other_seed_other_output(self, tmp_path: Path) -> None:
        generate_world(WorldConfig(n_customers=800, seed=3), tmp_path / "a")
        generate_world(WorldConfig(n_customers=800, seed=4), tmp_path / "b")
        a = pd.read_parquet(tmp_path / "a" / "source" / "messages.parquet")
        b = pd.read_parquet(tmp_path / "b" / "source" / "messages.parquet")
        assert not a.equals(b)


class TestShapes:
    def test_counts_and_shares(self, small_world: Path) -> None:
        truth = pd.read_parquet(small_world / "truth" / "truth_customers.parquet")
        assert len(truth) == 3000
        assert 0.015 < truth["opted_out"].mean() < 0.05
        assert 0.05 < truth["anonymous"].mean() < 0.12
        assert set(truth["lifecycle"]) == {"new", "active", "lapsing"}
        profiles = pd.read_parquet(small_world / "features" / "customer_profile.parquet")
        # anonymous visitors have no profile; opted-out customers consent to nothing
        assert len(profiles) == (~truth["anonymous"]).sum()
        out = profiles[profiles["opted_out"] == 1]
        assert (out[[f"consent_{c}" for c in CHANNELS]] == 0).all().all()

    def test_offers_catalogue(self, small_world: Path) -> None:
        offers = pd.read_parquet(small_world / "raw" / "offers.parquet")
        assert len(offers) == 20
        assert offers["offer_id"].is_unique
        assert (offers["price"] > 0).all() and offers["margin"].between(0, 1).all()
        end = World.load(small_world).config.end_ts
        valid = (offers["valid_from"] <= end) & (offers["valid_to"] >= end)
        assert valid.sum() == 18  # one expired, one not yet valid

    @pytest.mark.parametrize("profile", list(HOUR_PROFILES))
    def test_hour_profiles_peak_where_promised(self, small_world: Path, profile: str) -> None:
        truth = pd.read_parquet(small_world / "truth" / "truth_customers.parquet")
        events = pd.read_parquet(small_world / "raw" / "events.parquet")
        ids = truth.loc[truth["hour_profile"] == profile, ["customer_id", "tz_offset"]]
        ev = events.merge(ids, on="customer_id")
        local = (ev["timestamp"].dt.hour + ev["tz_offset"]) % 24
        hist = np.bincount(local, minlength=24)
        peak = HOUR_PROFILES[profile]
        dist = min(abs(hist.argmax() - peak), 24 - abs(hist.argmax() - peak))
        assert dist <= 2, f"{profile}: histogram peak {hist.argmax()} vs promised {peak}"

    def test_events_are_rich(self, small_world: Path) -> None:
        events = pd.read_parquet(small_world / "raw" / "events.parquet")
        kinds = events["type"].value_counts()
        assert {"view", "cart_add", "cart_abandon", "purchase"} <= set(kinds.index)
        assert kinds["view"] > kinds["cart_add"] > 0
        assert events["timestamp"].is_monotonic_increasing
        assert events["anonymous_id"].notna().any()


class TestGroundTruth:
    def test_outcomes_agree_with_ground_truth(self, small_world: Path) -> None:
        world = World.load(small_world)
        msgs = pd.read_parquet(small_world / "raw" / "messages.parquet")
        cust = world.index_of(msgs["customer_id"].to_numpy())
        offer = msgs["offer_id"].str[3:].astype(int).to_numpy() - 1
        ch = msgs["channel"].map({c: i for i, c in enumerate(CHANNELS)}).to_numpy()
        hour = msgs["local_hour"].to_numpy(dtype=float)
        expected = world.expected_conversion(cust, offer, ch, hour)
        observed = msgs["converted"].mean()
        assert abs(expected.mean() - observed) < 0.25 * observed
        # opens, per channel, within a few points of the ground-truth probability
        delivered = msgs["delivered"].to_numpy()
        p_open = world.p_open(cust, ch, hour)
        for j, name in enumerate(CHANNELS):
            m = delivered & (ch == j)
            if m.sum() > 300:
                assert abs(p_open[m].mean() - msgs["opened"].to_numpy()[m].mean()) < 0.03, name

    def test_no_message_without_consent(self, small_world: Path) -> None:
        world = World.load(small_world)
        msgs = pd.read_parquet(small_world / "raw" / "messages.parquet")
        cust = world.index_of(msgs["customer_id"].to_numpy())
        ch = msgs["channel"].map({c: i for i, c in enumerate(CHANNELS)}).to_numpy()
        assert world.consent[cust, ch].all()
        assert not world.opted_out[cust].any()

    def test_oracle_beats_random(self, small_world: Path) -> None:
        world = World.load(small_world)
        rng = np.random.default_rng(0)
        cust = rng.choice(np.flatnonzero(~world.opted_out & ~world.anonymous), 200)
        best = world.oracle(cust)
        rand = world.expected_revenue(
            cust,
            rng.integers(0, 18, 200),
            rng.integers(0, 5, 200),
            rng.integers(0, 24, 200).astype(float),
        )
        assert best["value"].mean() > 3 * rand.mean()
