"""Retraining from the decision log: log rows join the Feast training sets with their weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training.datasets.world import World
from training.measurement.log_training import MESSAGE_COLUMNS
from training.pipeline.dataset import KINDS, build_datasets
from training.pipeline.models import fit
from training.pipeline.train import FEATURES


def _log_rows(world: World, n: int = 400) -> pd.DataFrame:
    """Rows as training.measurement.log_training.rows_from_log makes them, after the world's end."""
    rng = np.random.default_rng(0)
    known = np.flatnonzero(~world.anonymous & ~world.opted_out)[:n]
    end = pd.Timestamp(world.config.end_ts)
    opened = rng.random(n) < 0.6
    converted = opened & (rng.random(n) < 0.3)
    return pd.DataFrame(
        {
            "message_id": [f"Ldec{i:05d}" for i in range(n)],
            "customer_id": world.customer_ids[known],
            "offer_id": world.offers["offer_id"].to_numpy()[rng.integers(0, 18, n)],
            "channel": rng.choice(["email", "push", "web"], n),
            "sent_at": end + pd.to_timedelta(np.sort(rng.uniform(3600, 5 * 86400, n)), unit="s"),
            "local_hour": rng.integers(0, 24, n),
            "policy": np.where(np.arange(n) % 2 == 0, "log:explore", "log:model"),
            "delivered": True,
            "opened": opened,
            "clicked": converted,
            "converted": converted,
            "revenue": np.where(converted, 50.0, 0.0),
            "source": "log",
            "weight": np.where(np.arange(n) % 2 == 0, 40.0, 1.0),
        }
    )[list(MESSAGE_COLUMNS)]


def test_log_rows_feed_the_propensity_model_with_their_weights(
    sqlite_store: Any, small_world: Path
) -> None:
    world = World.load(small_world)
    # 400 log rows, all newer than the history: fit() must still train on most of them
    rows = _log_rows(world)
    base = build_datasets(sqlite_store, progress=False)
    ds = build_datasets(sqlite_store, progress=False, extra=rows)
    assert ds.params["log_rows"] == len(rows)

    prop = ds.models["propensity"]
    is_log = prop.from_log
    # every opened log row made it through the point-in-time join
    assert is_log.sum() == int(rows["opened"].sum())
    weights = dict(zip(prop.meta["message_id"], prop.weight, strict=True))
    assert all(weights[m] == w for m, w in zip(rows["message_id"], rows["weight"], strict=True)
               if m in weights)  # fmt: skip
    assert (prop.weight[~is_log] == 1.0).all()
    # the test window is the newest 20 % of the log: history and older log rows train
    cut = pd.Timestamp(ds.params["log_test_start"])
    sent = pd.to_datetime(prop.meta["sent_at"], utc=True)
    assert (prop.test == (sent >= cut).to_numpy()).all()
    assert prop.test[is_log].mean() == pytest.approx(0.2, abs=0.08)
    assert not prop.test[~is_log].any()
    assert (
        prop.train.sum()
        == base.models["propensity"].train.sum()
        + base.models["propensity"].test.sum()
        + (is_log & prop.train).sum()
    )

    # the channel and send-time models learn from random-policy sends only: no log rows,
    # and their split is unchanged
    for kind in ("channel", "send_time"):
        d, b = ds.models[kind], base.models[kind]
        assert not d.from_log.any()
        assert (d.test == b.test).all()

    # weights reach LightGBM: heavy log rows move the fitted model
    tr = prop.train
    w = prop.weight[tr]
    names = FEATURES["propensity"]
    g = is_log[tr]  # as train does: the log's newest rows validate, the rest are fitted on
    p_w = fit(prop.x[tr], prop.y[tr], names, {"n_estimators": 30}, w, g).predict_proba(prop.x[:50])
    p_1 = fit(prop.x[tr], prop.y[tr], names, {"n_estimators": 30}, None, g).predict_proba(
        prop.x[:50]
    )
    assert not np.allclose(p_w, p_1)


def test_history_ids_that_begin_with_L_are_not_log_rows(
    sqlite_store: Any, small_world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A company's own send ids may begin with "L", like the log rows' ("L" + decision_id):
    only the ``source`` column makes a row a log row (its split, counts and validation group)."""
    from training.pipeline import dataset
    from training.pipeline.models import validation_rows

    load = dataset.load_messages
    monkeypatch.setattr(
        dataset, "load_messages", lambda: load().assign(message_id=lambda m: "L" + m["message_id"])
    )
    rows = _log_rows(World.load(small_world))
    base = build_datasets(sqlite_store, progress=False)
    ds = build_datasets(sqlite_store, progress=False, extra=rows)
    for kind in KINDS:
        b, d = base.models[kind], ds.models[kind]
        # every history id looks like a log row's, and none is one
        assert b.meta["message_id"].str.startswith("L").all()
        assert not b.from_log.any() and (b.meta["source"] == "history").all()
        hist = ~d.from_log
        assert hist.sum() == len(b.meta)
        # the history rows keep their split: the history's, or (propensity) all train, as
        # without "L" ids (before: every model took the log's split, all its rows training)
        expected = np.zeros(len(b.meta), dtype=bool) if kind == "propensity" else b.test
        assert (d.test[hist] == expected).all()
        # the log-row counts that train logs to MLflow and prints
        n_log = int(rows["opened"].sum()) if kind == "propensity" else 0
        assert int((d.from_log & d.train).sum()) + int((d.from_log & d.test).sum()) == n_log
        # validation groups: the history gives its own newest rows to early stopping
        g = d.from_log[d.train]
        valid = validation_rows(len(g), g)
        assert (valid[~g] == validation_rows(int((~g).sum()))).all()
    # real log rows are still log rows, and their ids are still "L" + decision id
    prop = ds.models["propensity"]
    assert set(prop.meta.loc[prop.from_log, "message_id"]) <= set(rows["message_id"])
    assert prop.test[prop.from_log].mean() == pytest.approx(0.2, abs=0.08)


def test_build_datasets_takes_only_log_rows_as_extra(sqlite_store: Any, small_world: Path) -> None:
    rows = _log_rows(World.load(small_world), n=20)
    with pytest.raises(ValueError, match="source"):
        build_datasets(sqlite_store, progress=False, extra=rows.drop(columns=["source"]))
    with pytest.raises(ValueError, match="source"):
        build_datasets(sqlite_store, progress=False, extra=rows.assign(source="history"))


def test_early_stopping_takes_the_newest_rows_of_each_source() -> None:
    """A small log is the newest data: a plain tail would put all of it in validation."""
    from training.pipeline.models import validation_rows

    groups = np.array([False] * 900 + [True] * 50)  # history, then a small log
    valid = validation_rows(len(groups), groups)
    assert valid[:900].sum() == 90 and valid[810:900].all()  # history's newest 10 %
    assert valid[900:].sum() == 5 and valid[945:].all()  # the log's newest 10 %
    assert (validation_rows(950) == (np.arange(950) >= 855)).all()  # no groups: one tail
