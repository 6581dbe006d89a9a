"""Deterministic experiment allocation: hash (salt, experiment, unit id) into buckets.

The same unit always lands in the same bucket (sticky across calls, processes and
restarts); buckets are uniform, so arm shares converge on the configured ones. The global
holdout uses its own hash namespace, so holdout membership is independent of the arm.
"""

from __future__ import annotations

import hashlib

import msgspec

from service.domain.config import Arm, Experiments

__all__ = ["Allocation", "AllocationError", "allocate", "bucket"]

HOLDOUT = "holdout"


class AllocationError(ValueError):
    """A caller-supplied experiment or arm that the configuration does not define."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Allocation(msgspec.Struct, frozen=True, kw_only=True):
    experiment: str | None
    arm: str
    bucket: int
    holdout: bool
    caller_allocated: bool
    config: Arm | None


def bucket(salt: str, experiment: str, unit: str, buckets: int = 10_000) -> int:
    digest = hashlib.blake2b(f"{salt}\x1f{experiment}\x1f{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


def _arm_for(arms: list[Arm], b: int, buckets: int) -> Arm:
    edge = 0.0
    for arm in arms:
        edge += arm.share * buckets
        if b < edge:
            return arm
    return arms[-1]


def allocate(
    cfg: Experiments, unit: str, experiment: str | None = None, arm: str | None = None
) -> Allocation:
    """Allocate ``unit`` (customer or anonymous id) to the global holdout or an arm.

    ``experiment`` defaults to ``cfg.default``. A caller may pass ``arm`` when it allocated on
    its side; the arm must exist in that experiment (or be ``"holdout"``) and is honoured.
    """
    name = experiment or cfg.default
    exp = cfg.definitions.get(name) if name else None
    if name and exp is None:
        raise AllocationError("experiment.name", f"experiment {name!r} is not configured")
    if arm is not None:
        if arm == HOLDOUT:
            return Allocation(
                experiment=name,
                arm=HOLDOUT,
                bucket=-1,
                holdout=True,
                caller_allocated=True,
                config=None,
            )
        chosen = next((a for a in exp.arms if a.name == arm), None) if exp else None
        if chosen is None:
            raise AllocationError("experiment.arm", f"arm {arm!r} is not configured for {name!r}")
        return Allocation(
            experiment=name,
            arm=arm,
            bucket=-1,
            holdout=False,
            caller_allocated=True,
            config=chosen,
        )
    hb = bucket(cfg.salt, "__global_holdout__", unit, cfg.buckets)
    if hb < cfg.global_holdout * cfg.buckets:
        return Allocation(
            experiment=name,
            arm=HOLDOUT,
            bucket=hb,
            holdout=True,
            caller_allocated=False,
            config=None,
        )
    if exp is None:
        return Allocation(
            experiment=None,
            arm="default",
            bucket=hb,
            holdout=False,
            caller_allocated=False,
            config=None,
        )
    b = bucket(cfg.salt, name or "", unit, cfg.buckets)
    chosen = _arm_for(exp.arms, b, cfg.buckets)
    return Allocation(
        experiment=name,
        arm=chosen.name,
        bucket=b,
        holdout=False,
        caller_allocated=False,
        config=chosen,
    )
