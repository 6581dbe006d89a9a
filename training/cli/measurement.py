"""Handlers of the measurement commands (the argument tree is :mod:`training.cli.parser`).

export-log     decision log + feedback streams in Redis -> Parquet
report         lift per experiment and arm vs the holdout (terminal table + HTML)
ope            off-policy evaluation of candidate policies from a log with propensities
ope-harness    estimator selection: each OPE estimator's error and coverage against a known truth
hillstrom      validate the lift report and OPE on the Hillstrom e-mail experiment
simulate       replay world customers through a running service, score with the truth
log-to-training  exported log -> extra training rows (messages.parquet schema + weight)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = [
    "cmd_export_log",
    "cmd_hillstrom",
    "cmd_log_to_training",
    "cmd_ope",
    "cmd_ope_harness",
    "cmd_report",
    "cmd_simulate",
]


def cmd_export_log(args: argparse.Namespace) -> int:
    from training.measurement.decision_log import export_log
    from training.settings import redis_url

    meta = export_log(args.redis_url or redis_url(), Path(args.out))
    print(f"exported to {args.out}:")
    for k, v in meta.items():
        print(f"  {k:<16} {v}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from service.domain.config import load_policy
    from training.measurement import lift
    from training.measurement.decision_log import load_log, outcomes
    from training.settings import paths

    decisions, feedback = load_log(Path(args.log))
    profiles = None
    if args.profiles is None:  # default: the world's profiles
        prof_path: Path | None = paths().data_dir / "features" / "customer_profile.parquet"
    else:
        prof_path = Path(args.profiles) if args.profiles else None
    if prof_path is not None and prof_path.exists():
        profiles = pd.read_parquet(prof_path, columns=["customer_id", "lifecycle"])
    frame = lift.decision_frame(outcomes(decisions, feedback), profiles)
    policy = load_policy(Path(args.policy) if args.policy else None)
    rep = lift.build_report(frame, lift.configured_shares(policy), title=f"Lift report: {args.log}")
    n_opt = int(decisions["opted_out"].sum())
    rep.notes.append(
        f"{len(frame):,} decisions ({frame['unit'].nunique():,} units) analysed; "
        f"{n_opt:,} opted-out records excluded"
    )
    print(lift.render_text(rep))
    if args.html:
        Path(args.html).write_text(lift.render_html(rep))
        print(f"\nHTML report: {args.html}")
    if args.figure and not rep.lift.empty:
        print(f"forest plot: {lift.write_forest_png(rep.lift, args.figure)}")
    return 2 if any(s.mismatch for s in rep.srm) and args.fail_on_srm else 0


def _ope_from_export(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """An export-log folder -> the OPE schema, with candidate replays and optional truth."""
    import numpy as np

    from training.measurement import ope, replay
    from training.measurement.decision_log import load_log, outcomes
    from training.settings import MODELS_DIR

    decisions, feedback = load_log(Path(args.log))
    if args.since:
        import pandas as pd

        decisions = decisions[decisions["ts"] >= pd.Timestamp(args.since)]
    out = outcomes(decisions, feedback)
    df = ope.bandit_log_from_decisions(out, args.reward, args.log_policies.split(","))
    if args.action_hour:  # the action includes the send hour: send-time candidates
        acted = df["action"] != "none"
        df.loc[acted, "action"] = (
            df.loc[acted, "action"] + "|" + df.loc[acted, "logged_local_hour"].astype(str)
        )
    n_withdrawn = int(ope.withdrawn(out["suppressed"]).sum())
    print(
        f"decision log {args.log}: {len(decisions):,} decisions, {len(df):,} usable for OPE "
        f"(arm policies {args.log_policies}; {n_withdrawn:,} withdrawn after a cap race "
        f"left out), {df['action'].nunique()} distinct actions, reward = {args.reward}"
    )
    specs: list[str] = []
    cands = [replay.parse_candidate(c, Path(args.models or MODELS_DIR)) for c in args.candidate]
    if cands or args.world:
        feats = replay.logged_features(df)
        for c in ("lifecycle", "tz_offset", "recency_days", "frequency_90d", "monetary_90d",
                  "click_rate", "open_rate_email", "open_rate_push"):  # fmt: skip
            df[f"x_{c}"] = feats[c].to_numpy()
        for cand in cands:
            acts = replay.candidate_actions(df, feats, cand)
            cact = acts["action"].astype(str)
            if args.action_hour:
                cact = cact.where(cact == "none", cact + "|" + acts["local_hour"].astype(str))
            df[f"cand_{cand.name}"] = cact.to_numpy()
            df[f"cand_{cand.name}_hour"] = acts["local_hour"].to_numpy()
            specs.append(f"column:cand_{cand.name}")
    if args.world:
        from training import simulation as simulate
        from training.datasets.world import World

        world = World.load(Path(args.world))
        organic = simulate.organic_model(world, Path(args.world), args.attribution_days)

        def truth(action: Any, hours: Any) -> float:
            parts = [str(a).split("|") if a != "none" else [None, None] for a in action]
            v = simulate.expected_reward(
                world, df["unit"].tolist(), [p[0] for p in parts], [p[1] for p in parts],
                np.maximum(np.asarray(hours, dtype=np.float64), 0), args.reward, organic,
            )  # fmt: skip
            return float(np.mean(v))

        df.attrs["truth"] = {
            "logging (on-policy mean)": truth(df["action"], df["logged_local_hour"]),
            **{
                f"column:cand_{c.name}": truth(df[f"cand_{c.name}"], df[f"cand_{c.name}_hour"])
                for c in cands
            },
        }
    return df, specs


def _methods(args: argparse.Namespace) -> tuple[str, ...]:
    from training.measurement import ope

    if not args.methods:
        return ope.ALL_METHODS
    out = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = [m for m in out if m not in ope.ALL_METHODS]
    if bad:
        raise SystemExit(f"--methods: unknown {bad}; choose from {','.join(ope.ALL_METHODS)}")
    return out


def _read_table(path: Path) -> Any:
    import pandas as pd

    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


def cmd_ope(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from training.measurement import ope

    path = Path(args.log)
    specs = list(args.policy or [])
    unsupported = args.unsupported
    if path.is_dir():
        df, cand_specs = _ope_from_export(args)
        specs += cand_specs
        unsupported = unsupported or "warn"
    else:
        df = _read_table(path)
    if not specs:
        print("ope: nothing to evaluate (give --policy and/or --candidate)")
        return 2
    if args.out:
        df.to_parquet(args.out, index=False)
        print(f"OPE log (documented schema) -> {args.out}")
    feats = args.features.split(",") if args.features else None
    compare = args.compare_to
    if compare is not None and compare not in specs:
        compare = f"column:cand_{compare}"  # a candidate's name
    rrange = None
    if args.reward_range:
        lo, _, hi = args.reward_range.partition(",")
        rrange = (float(lo), float(hi))
    catalogue = _read_table(Path(args.catalogue)) if args.catalogue else None
    try:
        t = ope.evaluate_frame(
            df, specs, args.reward_model, feats, args.alpha, args.bootstrap, args.seed, compare,
            folds=args.folds, catalogue=catalogue, methods=_methods(args), reward_range=rrange,
            slot=args.slot, logging_probs=args.logging_probs, unsupported=unsupported or "error",
            dm_refits=args.dm_refits,
        )  # fmt: skip
    except ope.UnsupportedPolicyError as exc:
        print(f"ope: missing support: {exc}")
        return 2
    truth: dict[str, float] | None = df.attrs.get("truth")
    if truth:
        t["truth"] = [
            truth[p] - truth[compare]
            if m.startswith("DR - ") and p in truth and compare in truth
            else truth.get(p, float("nan"))
            for p, m in zip(t["policy"], t["method"], strict=True)
        ]
        known = t["truth"].notna() & t["low"].notna()
        inside = (t["low"] <= t["truth"]) & (t["truth"] <= t["high"])
        t["covered"] = np.where(known, np.where(inside, "yes", "NO"), "-")
    ci = f"CLT and bootstrap ({args.bootstrap} resamples)" if args.bootstrap else "CLT"
    print(f"Off-policy evaluation of {len(df):,} logged rows, catalogue of "
          f"{t.attrs['catalogue']:,} actions; {1 - args.alpha:.0%} intervals: {ci}, clipped "
          f"to the reward's range")  # fmt: skip
    print(f"reward model for DM and the DR family: {t.attrs['reward_model']}")
    if t.attrs.get("reward_model_fallback"):
        print(f"WARNING: the reward model fell back to per-action means: "
              f"{t.attrs['reward_model_fallback']}")  # fmt: skip
    for note in t.attrs.get("notes", []):
        print(note)
    if truth:
        print("truth: the world's expected reward of each policy's actions on these contexts")
    cols = ["policy", *(["slot"] if args.slot else []), "method", "value", "se", "clt_low",
            "clt_high", "boot_low", "boot_high", "param", "ess", "match", "ess_events",
            "reliable", "reward_model", *(["truth", "covered"] if truth else [])]  # fmt: skip
    with pd.option_context("display.width", 250, "display.float_format", "{:.5g}".format):
        print(t[cols].to_string(index=False))
    weak = sorted(set(t.loc[~t["reliable"].astype(bool), "policy"]))
    if weak:
        print(
            f"WARNING: fewer than {ope.MIN_EFFECTIVE_EVENTS:.0f} effective rewarded rows "
            f"(ess_events) for {', '.join(weak)}: their importance-weighted intervals are NOT "
            "reliable (a few heavily weighted rows decide them); log more exploration, compare "
            "candidates closer to the logging policy, or see `ope-harness` for which estimator "
            "to trust"
        )
    return 0


def cmd_ope_harness(args: argparse.Namespace) -> int:
    from training.measurement.ope import harness

    methods = _methods(args)
    if args.log:
        if not args.policy:
            print("ope-harness --log: give the candidates with --policy")
            return 2
        df = _read_table(Path(args.log))
        res = harness.split_harness(
            df, args.policy, args.reps, args.reward_model, None, args.folds, args.bootstrap,
            args.alpha, args.seed, methods, progress=lambda s: print(s, flush=True),
        )  # fmt: skip
    else:
        from training.settings import paths

        world = None if args.world == "memory" else Path(args.world or paths().data_dir)
        cfg = harness.SimConfig(
            customers=args.customers, reps=args.reps, epsilon=args.epsilon,
            explore_top=args.explore_top, reward=args.reward, reward_model=args.reward_model,
            folds=args.folds, n_boot=args.bootstrap, dm_refits=args.dm_refits, alpha=args.alpha,
            seed=args.seed,
        )  # fmt: skip
        if args.write_log:
            df, truth = harness.simulated_log(cfg, world)
            df.to_parquet(args.write_log, index=False)
            print(f"{len(df):,} exploration decisions (reward {args.reward}) -> {args.write_log}")
            for spec, v in truth.items():
                print(f"  true value of {spec}: {v:.5g}")
            return 0
        res = harness.simulate_harness(cfg, world, methods, progress=lambda s: print(s, flush=True))
    print(res.render())
    if args.out:
        res.summary.to_csv(args.out, index=False)
        print(f"summary -> {args.out}")
    return 0


def cmd_hillstrom(args: argparse.Namespace) -> int:
    from training.datasets import hillstrom
    from training.measurement import hillstrom_validation, lift

    df = hillstrom.load(Path(args.path))
    check = hillstrom_validation.lift_check(df)
    print(lift.render_text(check.report, max_breakdown_rows=args.breakdown_rows))
    d = check.direct
    print("\nDirectly computed arm means (visit, conversion, spend):")
    for seg in hillstrom.ARMS:
        r = d.loc[seg]
        print(f"  {seg:<14} visit {r['visit']:.2%}  conversion {r['conversion']:.2%}  "
              f"spend {r['spend']:.3f}")  # fmt: skip
    verdict = "REPRODUCED" if check.ok else "MISMATCH"
    print(
        f"lift report vs direct differences: max |error| = {check.max_abs_error:.2g} -> {verdict}"
    )
    if args.html:
        Path(args.html).write_text(lift.render_html(check.report))
        print(f"HTML report: {args.html}")
    if args.figure and not check.report.lift.empty:
        print(f"forest plot: {lift.write_forest_png(check.report.lift, args.figure)}")
    res = hillstrom_validation.uplift_policy(
        df, target=args.target, cost=args.cost, seed=args.seed, n_boot=args.bootstrap
    )
    print()
    print(hillstrom_validation.render_uplift(res))
    return 0 if check.ok else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    from service.domain.config import load_policy
    from training import simulation as simulate
    from training.datasets.world import World
    from training.settings import paths

    data = paths().data_dir  # --data, when given, is NEXTBEST_DATA_DIR for this process
    world = World.load(data)
    cust = simulate.sample_customers(world, min(args.customers, args.max_customers), args.seed)
    policy_file = args.policy or os.environ.get("NEXTBEST_POLICY_FILE")
    policy = load_policy(Path(policy_file) if policy_file else None)
    res = simulate.simulate_http(
        world,
        cust,
        args.url,
        args.api_key or os.environ.get("NEXTBEST_API_KEY"),
        args.concurrency,
        args.seed,
        data,
        days=args.days,
        feedback=not args.no_feedback,
        attribution_days=args.attribution_days,
        quiet=simulate.quiet_mask(policy),
        arm=args.arm,
    )
    print(res.render())
    if args.out:
        res.per_customer.drop(columns=["send_at"]).to_parquet(args.out, index=False)
    return 1 if res.errors > len(cust) // 10 else 0


def cmd_log_to_training(args: argparse.Namespace) -> int:
    from training.measurement.log_training import messages_from_log

    rows = messages_from_log(Path(args.log), min_age_hours=args.min_age_hours)
    rows.to_parquet(args.out, index=False)
    print(f"{len(rows):,} training rows from {args.log} -> {args.out}")
    return 0
