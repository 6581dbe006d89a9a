"""``python -m training loop``: the learning loop against a running service, round after round.

Round 0 simulates the service as it is. Each further round then:

1. exports the decision log and outcomes of the round before (``export-log``) into
   ``DIR/round-N``, and merges every round's export so far into ``DIR/log-all``. It reads
   them from Redis's streams: run the service without the Parquet log exporter (with it,
   the streams keep only its backlog; not supported here yet);
2. retrains with them (``train --extra-log DIR/log-all``: the log's decisions with outcomes
   join the training rows, weighted by inverse propensity; training/pipeline/dataset.py);
3. promotes (the registry's gates decide: a candidate that does not pass keeps the champion);
4. exports the champion bundle into the service's models folder and reloads it
   (``POST /admin/models/reload``, with ``--admin-key`` when the service wants one; else waits ``--reload-wait`` seconds
   for the service's own poll of the folder);
5. deletes the service's own keys (``nb:*``: contacts, purchases, responses, the log already
   exported; Feast's feature rows stay), so the next week starts as fresh as the first;
6. simulates again (``simulate``), on other customers of the world (seed + round): the
   figures of a round are not about the customers whose outcomes it learned from.

After every simulation it prints the simulator's report (the model arm's share of the
margin oracle with the paired intervals, the explore arm, where the gap is, the chosen offer
and channel next to the oracle's) and a line per round so far; at the end the table of all
rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["cmd_loop", "merge_exports"]


def merge_exports(rounds: list[Path], out: Path) -> dict[str, int]:
    """Concatenate the exports of ``rounds`` (decision ids are unique across them) into one
    export folder ``out``, the input of ``train --extra-log``."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name in ("decisions", "feedback"):
        parts = [pd.read_parquet(d / f"{name}.parquet") for d in rounds]
        frame = pd.concat(parts, ignore_index=True).sort_values("ts", kind="stable")
        frame.reset_index(drop=True).to_parquet(out / f"{name}.parquet", index=False)
        counts[name] = len(frame)
    (out / "export.json").write_text(
        json.dumps({"merged_from": [str(d) for d in rounds], **counts}, indent=2)
    )
    return counts


def _clear_service_keys(url: str) -> int:
    """Delete every key of the service (``nb:*``); Feast's keys are not ``nb:``."""
    from service.adapters.redis_store import sync_client
    from training.settings import redis_cluster

    client = sync_client(url, redis_cluster())
    n = 0
    try:
        batch: list[Any] = []
        for key in client.scan_iter(match="nb:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                n += sum(int(client.delete(k)) for k in batch)  # one slot per call (Cluster)
                batch = []
        n += sum(int(client.delete(k)) for k in batch)
    finally:
        client.close()
    return n


def _reload(url: str, admin_key: str | None, wait_s: float) -> str:
    import httpx

    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    try:
        r = httpx.post(f"{url.rstrip('/')}/admin/models/reload", headers=headers, timeout=120.0)
        if r.status_code == 200:
            return f"reloaded ({r.json()})"
        note = f"reload answered {r.status_code}"
    except httpx.HTTPError as exc:
        note = f"reload failed ({type(exc).__name__})"
    time.sleep(wait_s)
    return f"{note}: waited {wait_s:g}s for the service's poll of its models folder"


def _line(r: int, res: Any, versions: str) -> str:
    explore = res.share("explore")
    match = res.mix.get("match")
    m = match["share"].tolist() if match is not None else [float("nan")] * 3
    return (
        f"round {r}: model arm {res.share():.1%} of the margin oracle, explore arm "
        f"{explore:.1%} (cost of exploring {res.share() - explore:+.1%} points); offer = "
        f"oracle's {m[0]:.1%}, channel = oracle's {m[1]:.1%}; models {versions}"
    )


def cmd_loop(args: argparse.Namespace) -> int:
    from service.domain.config import load_policy
    from training import simulation as simulate
    from training.datasets.world import World
    from training.measurement.decision_log import export_log
    from training.pipeline.bundle import export_bundle
    from training.pipeline.registry import promote
    from training.pipeline.train import train
    from training.settings import MODELS_DIR, paths, redis_url

    data = paths().data_dir
    world = World.load(data)
    policy_file = args.policy or os.environ.get("NEXTBEST_POLICY_FILE")
    quiet = simulate.quiet_mask(load_policy(Path(policy_file) if policy_file else None))
    api_key = args.api_key or os.environ.get("NEXTBEST_API_KEY")
    admin_key = args.admin_key or os.environ.get("NEXTBEST_ADMIN_KEY")
    store = args.redis_url or redis_url()
    out_dir = Path(args.out)
    models_dir = Path(args.models_dir or MODELS_DIR)
    lines: list[str] = []
    rounds: list[Path] = []
    versions = "as served"

    def run(r: int) -> Any:
        cust = simulate.sample_customers(world, args.customers, args.seed + r)
        res = simulate.simulate_http(
            world, cust, args.url, api_key, args.concurrency, args.seed + r, data,
            days=args.days, quiet=quiet,
        )  # fmt: skip
        print(f"\n=== round {r} (customers: seed {args.seed + r}) ===")
        print(res.render())
        lines.append(_line(r, res, versions))
        print("\n" + "\n".join(lines), flush=True)
        return res

    res = run(0)
    for r in range(1, args.rounds + 1):
        t0 = time.perf_counter()
        rdir = out_dir / f"round-{r - 1}"
        meta = export_log(store, rdir)
        rounds.append(rdir)
        merged = merge_exports(rounds, out_dir / "log-all")
        print(f"\nexported round {r - 1}: {meta['decisions']:,} decisions -> {rdir}; "
              f"log so far: {merged['decisions']:,} decisions")  # fmt: skip
        tr = train(max_rows=args.max_rows, seed=args.train_seed, extra_log=out_dir / "log-all")
        print(tr.table)
        _, refused = promote()
        for kind, reasons in refused.items():
            print(f"  promote {kind:<11} " + ("; ".join(reasons) if reasons else "promoted"))
        manifest = export_bundle(models_dir, "champion")
        versions = ", ".join(f"{k} v{m['version']}" for k, m in manifest["models"].items())
        print(
            f"bundle -> {models_dir}: {versions}; " + _reload(args.url, admin_key, args.reload_wait)
        )
        if not args.keep_state:
            print(f"deleted {_clear_service_keys(store):,} service keys (nb:*)")
        print(f"round {r} retrain took {time.perf_counter() - t0:.0f}s")
        res = run(r)
    return 1 if res.errors > args.customers // 10 else 0


def add_parser(sub: Any, command: Any) -> None:
    """The ``loop`` command's arguments (called by training/cli/parser.py)."""
    lp = command(
        "loop",
        "the learning loop: simulate, export-log, retrain with the log, promote, reload, "
        "simulate again, for --rounds rounds; the oracle share after each",
        cmd_loop,
    )
    lp.add_argument("--url", required=True, help="the running service, e.g. http://127.0.0.1:8000")
    lp.add_argument(
        "--rounds", type=int, default=3, help="retrain-and-simulate rounds after round 0"
    )
    lp.add_argument("--customers", type=int, default=20_000, help="customers per round")
    lp.add_argument("--days", type=int, default=7, help="spread each round's decisions over N days")
    lp.add_argument("--seed", type=int, default=0, help="round r samples customers with seed + r")
    lp.add_argument("--train-seed", type=int, default=42, help="seed of the models")
    lp.add_argument("--max-rows", type=int, default=None, help="cap on each model's training rows")
    lp.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    lp.add_argument("--api-key", default=None, help="default: $NEXTBEST_API_KEY")
    lp.add_argument("--admin-key", default=None, help="for /admin/models/reload; default: "
                    "$NEXTBEST_ADMIN_KEY (a refused reload: wait for the service's poll)")  # fmt: skip
    lp.add_argument("--reload-wait", type=float, default=45.0, help="seconds to wait for a reload")
    lp.add_argument(
        "--models-dir", default=None, help="the service's bundle folder (default: models/)"
    )
    lp.add_argument(
        "--redis-url", default=None, help="the service's Redis (default: $NEXTBEST_REDIS_URL)"
    )
    lp.add_argument("--out", default="var/loop", help="folder of the round exports")
    lp.add_argument("--keep-state", action="store_true", help="do not delete nb:* between rounds")
    lp.add_argument("--policy", default=None, help="the service's policy.yaml (quiet hours)")
