"""Triggered sequences (service/config/sequences.yaml) and the scheduler that runs them.

Timers live in Redis, not in the process, so any number of service processes share them and
a restart loses none. All sequence keys carry the hash tag ``{nbseq}`` (one slot, so every
script below is atomic on a Redis Cluster too):

| key | type | content |
|---|---|---|
| ``nb:seq:{nbseq}:timers`` | sorted set | due steps, score = due time, member ``unit|sequence|instance|step|attempt`` |
| ``nb:seq:{nbseq}:leases`` | sorted set | claimed steps, score = lease deadline |
| ``nb:seq:{nbseq}:i:<sequence>:<unit>`` | hash | the unit's active instance: ``instance``, ``step``, ``trigger_ts``, ``timer``, ``defers`` |
| ``nb:actions`` | stream | actions for the delivery worker (``python -m service.delivery``) |
| ``nb:log:sequences`` | stream | one record per step outcome (fired, no_action, exited, deferred) |

**Claim.** ``CLAIM_LUA`` moves due members from ``timers`` to ``leases`` in one script: each
member goes to exactly one scheduler, so two instances never fire the same step. Leases whose
deadline passed (the claimer died mid-step) go back to ``timers`` and fire again; the action
id is deterministic (``<instance>:<step>``) so the delivery worker drops a repeat. A step
commits with ``ADVANCE_LUA`` (compare-and-set on the instance's ``timer``: a purchase or a new
trigger in the meantime makes a claimed member stale, and stale members are dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from contracts.keys import (
    ACTIONS_STREAM,
    SEQUENCE_LOG,
    sequence_instance_key,
    sequence_leases_key,
    sequence_timers_key,
)
from contracts.records import ActionRecord, SequenceStepRecord, encode
from contracts.vocabulary import DEFAULT_CHANNELS
from service.background import sleep_or_stop
from service.domain.allocation import allocate
from service.realtime.state import RealtimeStore
from service.schemas import Context, DecideRequest, DecideResponse

__all__ = [
    "Clock",
    "Scheduler",
    "SequencesConfig",
    "StepOutcome",
    "load_sequences",
]

log = logging.getLogger("nextbest.sequences")

#: an injectable clock: epoch seconds (tests pass a controllable one)
Clock = Callable[[], float]
Condition = Literal["cart_not_empty", "no_purchase_since_trigger"]

TIMERS = sequence_timers_key()
LEASES = sequence_leases_key()


class Step(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    wait_hours: float
    when: list[Condition] = []
    placement: str = "campaign"
    channels: list[str] | None = None  # checked against the vocabulary by load_sequences
    #: ``cart``: remind of the open cart (the decision's ``context.remind``): only the carted
    #: offers, or the offers of a carted item's category when the item is not an offer
    remind: Literal["cart"] | None = None


class Sequence(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trigger: str
    exit_on: list[str] = []
    restart_on_trigger: bool = True
    max_defer_hours: int = 12
    steps: list[Step]


class SequencesConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: str
    sequences: dict[str, Sequence] = {}

    def triggered_by(self, event_type: str) -> list[str]:
        return [n for n, s in self.sequences.items() if s.trigger == event_type]

    def ended_by(self, event_type: str) -> list[str]:
        return [n for n, s in self.sequences.items() if event_type in s.exit_on]


DEFAULT_SEQUENCES = Path(__file__).resolve().parent.parent / "config" / "sequences.yaml"


def load_sequences(
    path: Path | None = None, channels: tuple[str, ...] = DEFAULT_CHANNELS
) -> SequencesConfig:
    raw = yaml.safe_load((path or DEFAULT_SEQUENCES).read_text())
    cfg = msgspec.convert(raw, SequencesConfig)
    for name, seq in cfg.sequences.items():
        if not seq.steps:
            raise ValueError(f"sequence {name}: no steps")
        if "|" in name:
            raise ValueError(f"sequence {name}: '|' is not allowed in a name")
        for k, step in enumerate(seq.steps):
            unknown = sorted(set(step.channels or ()) - set(channels))
            if unknown:
                raise ValueError(f"sequence {name}, step {k}: unknown channels {unknown}")
    return cfg


instance_key = sequence_instance_key


def member(unit: str, sequence: str, instance: str, step: int, attempt: int = 0) -> str:
    return f"{unit}|{sequence}|{instance}|{step}|{attempt}"


# KEYS: instance, timers. ARGV: instance id, trigger ts, due, member, restart (0/1), ttl.
# Returns 1 started, 2 first step moved (restart), 0 already running (or the trigger is older
# than the last one: a retried event does not move the wait back).
TRIGGER_LUA = """
local cur = redis.call('HGET', KEYS[1], 'instance')
if cur then
  local prev = tonumber(redis.call('HGET', KEYS[1], 'last_trigger_ts') or '0')
  if ARGV[5] == '1' and redis.call('HGET', KEYS[1], 'step') == '0'
     and tonumber(ARGV[2]) >= prev then
    local old = redis.call('HGET', KEYS[1], 'timer')
    local new = string.gsub(ARGV[4], ARGV[1], cur, 1)
    redis.call('ZREM', KEYS[2], old)
    redis.call('ZADD', KEYS[2], ARGV[3], new)
    redis.call('HSET', KEYS[1], 'timer', new, 'last_trigger_ts', ARGV[2])
    return 2
  end
  return 0
end
redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'step', '0', 'trigger_ts', ARGV[2],
           'last_trigger_ts', ARGV[2], 'timer', ARGV[4], 'defers', '0')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

# KEYS: instance, timers, leases. ARGV: end ts. Ends the instance if it started at or before
# the end event (a purchase older than the cart add does not end it). Returns 1 ended.
CANCEL_LUA = """
local trig = redis.call('HGET', KEYS[1], 'trigger_ts')
if not trig or tonumber(trig) > tonumber(ARGV[1]) then return 0 end
local timer = redis.call('HGET', KEYS[1], 'timer')
redis.call('ZREM', KEYS[2], timer)
redis.call('ZREM', KEYS[3], timer)
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: timers, leases. ARGV: now, lease deadline, limit. Expired leases go back to timers;
# due timers move to leases and are returned (each to exactly one caller).
CLAIM_LUA = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(expired) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZADD', KEYS[1], ARGV[1], m)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], ARGV[2], m)
end
return due
"""

# KEYS: instance, timers, leases. ARGV: claimed member, next member ('' = finish), next due,
# next step, defers. Compare-and-set on the instance's current timer. Returns 1 committed,
# 0 stale (the instance ended or moved on: nothing is scheduled).
ADVANCE_LUA = """
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('HGET', KEYS[1], 'timer') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'timer', ARGV[2], 'step', ARGV[4], 'defers', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class StepOutcome:
    unit: str
    sequence: str
    instance: str
    step: int
    outcome: str  # fired | no_action | exited | deferred | stale
    decision_id: str | None = None
    arm: str | None = None
    channel: str | None = None
    offer_id: str | None = None
    action_id: str | None = None


DecideFn = Callable[[DecideRequest], Any]  # async: DecideRequest -> DecideResponse


class Scheduler:
    """Starts, ends and runs sequence steps; any number of instances may share one Redis."""

    def __init__(
        self,
        client: Any,
        config: SequencesConfig,
        store: RealtimeStore,
        decide: DecideFn,
        experiments: Any,
        clock: Clock = time.time,
        lease_s: float = 120.0,
        batch: int = 100,
        log_maxlen: int = 1_000_000,
    ) -> None:
        self.client = client
        self.config = config
        self.store = store
        self.decide = decide
        self.experiments = experiments
        self.clock = clock
        self.lease_s = lease_s
        self.batch = batch
        self.log_maxlen = log_maxlen
        self._trigger = client.register_script(TRIGGER_LUA)
        self._cancel = client.register_script(CANCEL_LUA)
        self._claim = client.register_script(CLAIM_LUA)
        self._advance = client.register_script(ADVANCE_LUA)

    # ------------------------------------------------------------ event hooks
    def follows(self, event_type: str) -> bool:
        """Does an event of this type start or end a sequence? (pure)"""
        return bool(self.config.triggered_by(event_type) or self.config.ended_by(event_type))

    async def on_event(self, unit: str, event_type: str, ts: float) -> None:
        """Start sequences this event triggers; end those it exits (for a known customer).

        Idempotent for one event (same ``ts``): a second call finds the instance it started
        (the first step keeps its due time) or ended."""
        for name in self.config.ended_by(event_type):
            await self._cancel(keys=[instance_key(name, unit), TIMERS, LEASES], args=[ts])
        for name in self.config.triggered_by(event_type):
            seq = self.config.sequences[name]
            inst = secrets.token_hex(8)
            due = ts + seq.steps[0].wait_hours * 3600.0
            ttl = int(sum(s.wait_hours for s in seq.steps) * 3600 + seq.max_defer_hours * 3600)
            await self._trigger(
                keys=[instance_key(name, unit), TIMERS],
                args=[
                    inst,
                    ts,
                    due,
                    member(unit, name, inst, 0),
                    int(seq.restart_on_trigger),
                    ttl + 7 * 86400,
                ],
            )

    # -------------------------------------------------------------- scheduler
    async def run_due(self, now: float | None = None) -> list[StepOutcome]:
        """Claim and run every due step (one batch); returns what happened."""
        now = self.clock() if now is None else now
        claimed = await self._claim(
            keys=[TIMERS, LEASES], args=[now, now + self.lease_s, self.batch]
        )
        out = []
        for raw in claimed:
            m = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                out.append(await self._run_step(m, now))
            except Exception:  # the lease expires and the step runs again
                log.exception("sequence step failed")
        return out

    async def run(self, poll_s: float = 1.0, stop: asyncio.Event | None = None) -> None:
        """Run due steps every ``poll_s`` until ``stop`` is set."""
        while True:
            try:
                while len(await self.run_due()) >= self.batch:
                    if stop is not None and stop.is_set():
                        break
            except Exception as exc:
                log.warning("scheduler pass failed: %s", type(exc).__name__)
            if await sleep_or_stop(stop, poll_s):
                return

    async def _commit(
        self, m: str, nxt: str, due: float, step: int, defers: int, unit: str, name: str
    ) -> bool:
        ok = await self._advance(
            keys=[instance_key(name, unit), TIMERS, LEASES], args=[m, nxt, due, step, defers]
        )
        return bool(ok)

    async def _run_step(self, m: str, now: float) -> StepOutcome:
        unit, name, inst, step_s, _ = m.split("|")
        k = int(step_s)
        seq = self.config.sequences.get(name)
        state = await self.client.hgetall(instance_key(name, unit))
        info = {
            (a.decode() if isinstance(a, bytes) else a): (b.decode() if isinstance(b, bytes) else b)
            for a, b in state.items()
        }
        if seq is None or info.get("timer") != m or k >= len(seq.steps):
            await self.client.zrem(LEASES, m)
            return StepOutcome(unit, name, inst, k, "stale")
        step = seq.steps[k]
        trigger_ts = float(info["trigger_ts"])
        defers = int(info.get("defers", "0"))
        rt = await self.store.read(unit)
        feats = rt.features or {}
        failed = [c for c in step.when if not _holds(c, feats, trigger_ts)]
        if failed:
            await self._commit(m, "", 0, k, defers, unit, name)
            arm = allocate(self.experiments, unit).arm
            out = StepOutcome(unit, name, inst, k, "exited", arm=arm)
            await self._log(out, now, {"failed": [str(c) for c in failed]})
            return out
        req = DecideRequest(
            customer_id=unit,
            context=Context(
                placement=step.placement, trigger=f"seq:{name}:{k}", remind=step.remind
            ),
            channels=list(step.channels) if step.channels else None,
            now=datetime.fromtimestamp(now, UTC),
        )
        resp: DecideResponse = await self.decide(req)
        a = resp.action
        quiet_only = a is None and _only_quiet_hours(resp)
        if quiet_only and defers < seq.max_defer_hours:
            nxt = member(unit, name, inst, k, defers + 1)
            await self._commit(m, nxt, now + 3600.0, k, defers + 1, unit, name)
            out = StepOutcome(unit, name, inst, k, "deferred", resp.decision_id, resp.arm)
            await self._log(out, now, {})
            return out
        action_id = None
        if a is not None:
            action_id = f"{inst}:{k}"
            await self.client.xadd(
                ACTIONS_STREAM,
                {
                    "action_id": action_id,
                    "record": encode(
                        ActionRecord(
                            action_id=action_id,
                            unit=unit,
                            sequence=name,
                            step=k,
                            decision_id=resp.decision_id,
                            arm=resp.arm,
                            offer_id=a.offer_id,
                            channel=a.channel,
                            send_at=a.send_at,
                            ts=now,
                        )
                    ),
                },
                maxlen=self.log_maxlen,
                approximate=True,
            )
        last = k + 1 >= len(seq.steps)
        nxt = "" if last else member(unit, name, inst, k + 1)
        due = now + (0.0 if last else seq.steps[k + 1].wait_hours * 3600.0)
        await self._commit(m, nxt, due, k + 1, 0, unit, name)
        out = StepOutcome(
            unit,
            name,
            inst,
            k,
            "fired" if a is not None else "no_action",
            resp.decision_id,
            resp.arm,
            a.channel if a else None,
            a.offer_id if a else None,
            action_id,
        )
        await self._log(out, now, {"suppressed": sorted({s.reason for s in resp.suppressed})})
        return out

    async def _log(self, o: StepOutcome, now: float, extra: dict[str, list[str]]) -> None:
        rec = SequenceStepRecord(
            ts=now,
            unit=o.unit,
            sequence=o.sequence,
            sequences_version=self.config.version,
            instance=o.instance,
            step=o.step,
            outcome=o.outcome,  # type: ignore[arg-type]
            decision_id=o.decision_id,
            arm=o.arm,
            channel=o.channel,
            offer_id=o.offer_id,
            action_id=o.action_id,
            failed=extra.get("failed"),
            suppressed=extra.get("suppressed"),
        )
        with contextlib.suppress(Exception):
            await self.client.xadd(
                SEQUENCE_LOG, {"record": encode(rec)}, maxlen=self.log_maxlen, approximate=True
            )


def _holds(cond: str, feats: dict[str, float], trigger_ts: float) -> bool:
    if cond == "cart_not_empty":
        return feats.get("cart_items_rt", 0.0) > 0
    if cond == "no_purchase_since_trigger":
        return not feats.get("last_purchase_ts", 0.0) >= trigger_ts
    raise ValueError(f"unknown condition {cond!r}")


def _only_quiet_hours(resp: DecideResponse) -> bool:
    """No action because every channel left was in quiet hours (no offer was even scored)."""
    quiet = any(s.reason == "quiet_hours" and s.offer_id is None for s in resp.suppressed)
    return quiet and not any(s.offer_id is not None for s in resp.suppressed)
