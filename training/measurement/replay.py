"""Replay logged decisions through a candidate policy, offline, with the service's own code.

Off-policy evaluation needs, for every logged context, the action a *candidate* policy would
have taken (a new model bundle, other levers in ``policy.yaml``, another arm's rule). This
module rebuilds each logged decision's input and calls the service's pure
:func:`service.domain.decision.decide` with the candidate's models and configuration:

* **features**: the customer's feature values *as of the decision time*, by a Feast
  point-in-time join (``get_historical_features``) over the profile, behaviour and
  engagement views, the same join the training sets use;
* **request**: the logged placement and time; the catalogue of the candidate's bundle;
  channels that the log shows were blocked by a frequency cap, and offers the log shows
  were ineligible (validity, already purchased, rules), stay excluded;
* **approximations** (fields the decision log does not keep): the caller's channel and
  candidate restrictions, the IANA time zone (the profile's UTC offset is used), the cart
  and real-time features. Candidates are compared on the greedy action (no exploration).

The candidate's action is reported as ``offer|channel`` (``none`` when it would send
nothing), with its local send hour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from contracts.features import DEFAULT_SPEC
from service.domain.allocation import Allocation
from service.domain.config import Arm, PolicyConfig, load_policy
from service.domain.decision import DecisionInput, decide

__all__ = ["Candidate", "candidate_actions", "logged_features", "parse_candidate"]

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Candidate:
    """A policy to replay: models (bundle folder), configuration and the arm's rule."""

    name: str
    models: Path
    policy: Path | None = None
    arm: str = "model"  # the candidate's arm policy: model (greedy) or popular
    fixed_hour: int | None = None


def parse_candidate(spec: str, default_models: Path) -> Candidate:
    """``NAME[,models=DIR][,policy=FILE][,arm=model|popular][,hour=H]`` -> Candidate."""
    name, *parts = spec.split(",")
    kv: dict[str, str] = {}
    for p in parts:
        k, sep, v = p.partition("=")
        if not sep or k not in ("models", "policy", "arm", "hour"):
            raise ValueError(f"candidate {spec!r}: expected key=value with models/policy/arm/hour")
        kv[k] = v
    if kv.get("arm", "model") not in ("model", "popular"):
        raise ValueError(f"candidate {spec!r}: arm must be model or popular")
    return Candidate(
        name=name,
        models=Path(kv.get("models", str(default_models))),
        policy=Path(kv["policy"]) if "policy" in kv else None,
        arm=kv.get("arm", "model"),
        fixed_hour=int(kv["hour"]) if "hour" in kv else None,
    )


def logged_features(decisions: pd.DataFrame, store: Any | None = None) -> pd.DataFrame:
    """Point-in-time raw features per decision (row order kept; NaN where Feast has none).

    ``decisions`` needs ``decision_id``, ``unit`` and ``ts``. Anonymous units get NaN.
    """
    if store is None:
        from training.pipeline.featurestore import feature_store

        store = feature_store()
    refs = [f"{view}:{name}" for view, names in DEFAULT_SPEC.raw.items() for name in names]
    entity = pd.DataFrame(
        {
            "customer_id": decisions["unit"].astype(str).to_numpy(),
            "event_timestamp": pd.to_datetime(decisions["ts"], utc=True).to_numpy(),
            "row_id": np.arange(len(decisions)),
        }
    )
    joined = store.get_historical_features(entity_df=entity, features=refs).to_df()
    joined = joined.set_index("row_id").reindex(np.arange(len(decisions)))
    names = [n for names in DEFAULT_SPEC.raw.values() for n in names]
    out: pd.DataFrame = joined[names].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    return out.reset_index(drop=True)


def _logged_exclusions(suppressed: str) -> tuple[set[str], set[str]]:
    """(channels blocked by a cap, offers ineligible) from a logged ``suppressed`` list."""
    capped: set[str] = set()
    ineligible: set[str] = set()
    for reason, offer, channel in json.loads(suppressed or "[]"):
        if reason == "frequency_cap" and offer is None and channel:
            capped.add(channel)
        elif reason == "ineligible" and offer is not None and channel is None:
            ineligible.add(offer)
    return capped, ineligible


def candidate_actions(
    decisions: pd.DataFrame, features: pd.DataFrame, cand: Candidate
) -> pd.DataFrame:
    """The candidate's greedy action for every logged decision.

    Returns ``action`` (``offer|channel`` or ``none``), ``offer``, ``channel`` and
    ``local_hour`` (-1 for none), in the row order of ``decisions``.
    """
    from service.adapters.models import load_bundle

    models = load_bundle(cand.models)
    cfg: PolicyConfig = load_policy(cand.policy)
    arm = Arm(name=cand.name, share=1.0, policy=cand.arm, fixed_hour=cand.fixed_hour)  # type: ignore[arg-type]
    alloc = Allocation(
        experiment=None, arm=cand.name, bucket=-1, holdout=False, caller_allocated=True, config=arm
    )
    offers = list(models.offers.values())
    feats = features.to_numpy(dtype=np.float64)
    names = list(features.columns)
    ts = pd.to_datetime(decisions["ts"], utc=True)
    now = ((ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()).to_numpy(dtype=np.float64)
    rows: list[tuple[str, str | None, str | None, int]] = []
    for i, r in enumerate(decisions.itertuples(index=False)):
        known = bool(r.known)
        raw = feats[i]
        f = (
            None
            if not known or np.isnan(raw).all()
            else {n: raw[j : j + 1] for j, n in enumerate(names)}
        )
        capped, ineligible = _logged_exclusions(str(r.suppressed))
        placement = str(r.placement)
        chans = [c for c in cfg.placements[placement].channels if c not in capped]
        inp = DecisionInput(
            unit_id=str(r.unit),
            known=known,
            features=f,
            now=float(now[i]),
            placement=placement,
            channels=chans,
            candidates=[o for o in offers if o.offer_id not in ineligible],
            allocation=alloc,
            contact_history=[],
        )
        d = decide(inp, cfg, models if f is not None else None, models.priors)
        a = d.action
        if a is None:
            rows.append(("none", None, None, -1))
        else:
            rows.append((f"{a.offer.offer_id}|{a.channel}", a.offer.offer_id, a.channel,
                         a.local_hour))  # fmt: skip
    return pd.DataFrame(rows, columns=["action", "offer", "channel", "local_hour"])
