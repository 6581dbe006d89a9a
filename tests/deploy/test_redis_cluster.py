"""The whole decision path on a 3-master Redis Cluster of local `redis-server` processes.

Feast materializes into the cluster (``redis_type: redis_cluster``), the fast reader's values
equal Feast's own online read there, a service process (``NEXTBEST_REDIS_CLUSTER=1``) passes
the decision suite, and the tools (decision-log export, delivery worker) work against it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis

from contracts.features import DEFAULT_SPEC
from contracts.keys import ACTIONS_STREAM, decision_streams, delivered_key
from contracts.records import ActionRecord, encode
from service.adapters.feast_redis import FeastRedisLayout
from service.adapters.redis_store import sync_client
from service.delivery import DeliveryWorker
from tests.deploy.conftest import ROOT, base_env, service_env, service_process, world_people
from tests.deploy.decision_suite import CHECKS, Check, Deployment

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def cluster_store(redis_cluster: Any, small_world: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """`feast apply` + materialize of the session's world into the cluster."""
    from training.datasets.world import World
    from training.pipeline.featurestore import apply, materialize

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEXTBEST_REDIS_CLUSTER", "1")
        mp.setenv("NEXTBEST_VAR_DIR", str(tmp_path_factory.mktemp("cluster-var")))
        mp.setenv("NEXTBEST_DATA_DIR", str(small_world))
        mp.delenv("REDIS_CONNECTION_STRING", raising=False)
        apply("redis", redis_cluster.url)
        store = materialize("redis", redis_cluster.url, end=World.load(small_world).config.end_ts)
    assert store.config.online_store.redis_type == "redis_cluster"
    return store


@pytest.fixture(scope="module")
def rc(redis_cluster: Any) -> Iterator[Any]:
    client = sync_client(redis_cluster.url, cluster=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def deployment(
    redis_cluster: Any,
    cluster_store: Any,
    rc: Any,
    model_bundle: Path,
    small_world: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("cluster-service")
    env = service_env(
        redis_cluster.url,
        tmp / "spool",
        NEXTBEST_REDIS_CLUSTER="1",
        NEXTBEST_MODELS_DIR=str(model_bundle),
        NEXTBEST_WORKERS="1",
    )
    with service_process(env, tmp / "service.log") as (_, base):
        yield Deployment("redis-cluster", [base], rc, world_people(small_world, 0))


def test_feast_materialized_across_the_cluster(
    cluster_store: Any, redis_cluster: Any, rc: Any, small_world: Path
) -> None:
    """Every master holds part of the rows; the direct read equals Feast's own online read."""
    sizes = [redis.Redis(port=p).dbsize() for p in redis_cluster.ports]
    assert all(n > 0 for n in sizes), sizes
    layout = FeastRedisLayout(DEFAULT_SPEC.raw, project="nextbest")
    ids = pd.read_parquet(small_world / "features" / "customer_profile.parquet")["customer_id"]
    sample = ids.sample(40, random_state=11).tolist()
    names = [f"{view}:{f}" for view, feats in DEFAULT_SPEC.raw.items() for f in feats]
    sdk = cluster_store.get_online_features(
        features=names, entity_rows=[{"customer_id": c} for c in sample]
    ).to_dict()
    nodes = set()
    for i, cid in enumerate(sample):
        key = layout.key(cid)
        nodes.add(rc.get_node_from_key(key).port)
        values, ts = layout.decode(rc.hmget(key, layout.all_fields))
        assert values is not None and ts, cid
        for name in layout.names:
            want, got = sdk[name][i], float(values[name][0])
            assert math.isnan(got) if want is None else got == pytest.approx(float(want)), (
                cid,
                name,
            )
    assert len(nodes) == 3  # the sample's rows live on every master


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_decision_suite(check: Check, deployment: Deployment) -> None:
    await check(deployment)


def test_decision_log_export_reads_every_shard(
    deployment: Deployment, redis_cluster: Any, tmp_path: Path
) -> None:
    """`python -m training export-log` with NEXTBEST_REDIS_CLUSTER=1, as an operator runs it.

    (A separate process also because, in this long test process, pandas' float->datetime
    conversion inside export_log once raised FloatingPointError on data that converts fine
    in a fresh process: see the report; the CLI is what operators run anyway.)
    """
    masters = {deployment.r.get_node_from_key(s).port for s in decision_streams()}
    assert len(masters) == 3  # the 16 log shards are spread over the masters
    out = tmp_path / "export"
    env = {**base_env(), "NEXTBEST_REDIS_CLUSTER": "1", "NEXTBEST_REDIS_URL": redis_cluster.url}
    # the streams themselves (no exporter runs here; the exporter on a cluster:
    # tests/capacity/test_exporter.py); `--out` alone reads the exporter's Parquet files
    source = ["--redis-url", redis_cluster.url]
    proc = subprocess.run(
        [sys.executable, "-m", "training", "export-log", "--out", str(out), *source],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    meta = json.loads((out / "export.json").read_text())
    logged = pd.read_parquet(tmp_path / "export" / "decisions.parquet")["decision_id"]
    assert meta["decisions"] == len(logged)
    assert {d["decision_id"] for d in deployment.decisions} <= set(logged)
    with pytest.raises(redis.exceptions.MovedError):  # what a plain client gets on a cluster
        for s in decision_streams():
            redis.Redis(port=redis_cluster.ports[0]).xlen(s)


def test_delivery_worker_on_the_cluster(rc: Any) -> None:
    group = "deploy-test"
    ids = [f"deploy-{i}:0" for i in range(6)]

    def action(a: str) -> bytes:
        return encode(
            ActionRecord(
                action_id=a, unit="C1", sequence="abandoned_cart", step=0, decision_id="d",
                arm="model", offer_id="OFF001", channel="email",
                send_at="2026-11-16T10:00:00+00:00", ts=0.0,
            )
        )  # fmt: skip

    for a in ids:
        rc.xadd(ACTIONS_STREAM, {"action_id": a, "record": action(a)})
    rc.xadd(ACTIONS_STREAM, {"action_id": ids[0], "record": action(ids[0])})
    sent: list[ActionRecord] = []
    worker = DeliveryWorker(rc, "w1", send=sent.append, group=group)
    worker.run_once()
    assert sorted(a.action_id for a in sent if a.action_id in ids) == ids  # repeat dropped
    markers = {rc.get_node_from_key(delivered_key(a)).port for a in ids}
    assert len(markers) > 1  # markers on several masters
    assert rc.xpending(ACTIONS_STREAM, group)["pending"] == 0
