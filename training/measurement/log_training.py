"""Retrain from logs: the exported decision log + feedback as extra training rows.

``python -m training train --extra-log EXPORT`` uses them (see :mod:`training.pipeline.dataset`:
they feed the propensity model, weighted, with a time split on the log).
:func:`messages_from_log` turns an export (:mod:`training.measurement.decision_log`) into rows in the
schema of the world's ``messages.parquet``, plus a ``weight`` column
(``python -m training log-to-training`` writes them to a file; :func:`append_log_rows`
appends them to the historical messages):

| column | from the log |
|---|---|
| message_id | ``"L" + decision_id`` (unique next to the history's ids; not a marker: see ``source``) |
| customer_id | ``unit`` (identified customers only; anonymous visitors have no features) |
| offer_id, channel | the action taken |
| sent_at | ``action.send_at`` (UTC) |
| local_hour | ``action.local_hour`` (the customer's local hour of ``sent_at``) |
| policy | ``"log:<policy>"`` (e.g. ``log:model``, ``log:explore``) |
| delivered, opened, clicked, converted | feedback events, closed downwards: converted implies clicked implies opened implies delivered (feedback often skips steps) |
| revenue | ``value`` of the ``converted`` feedback (0 if none) |
| source | ``"log"`` (``SOURCE_LOG``; the history's rows: ``"history"``, ``SOURCE_HISTORY``) |
| weight | ``1 / choice_probability`` (inverse propensity of the logged action; 1 when absent) |

``source`` is what marks a row as the log's everywhere in training (validation groups, the
log-row counts, the propensity model's split), never the ``message_id``: a company's own send
ids may begin with "L" too.

Only decisions with an action (not holdout, not suppressed) become rows, and only those at
least ``min_age_hours`` older than the newest decision in the export, so their outcomes had
time to arrive. Decisions with ``degraded`` flags are kept (their action was really sent);
pass ``drop_cold_start=True`` to keep only model-scored ones.

The historical rows get ``weight = 1.0`` and ``source = "history"`` in :func:`append_log_rows`.
Weights are capped at ``max_weight`` to bound the variance a handful of rare explored actions
can add.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.measurement.decision_log import load_log, outcomes
from training.pipeline.dataset import MESSAGE_COLS, SOURCE, SOURCE_HISTORY, SOURCE_LOG

__all__ = [
    "MESSAGE_COLUMNS",
    "SOURCE",
    "SOURCE_HISTORY",
    "SOURCE_LOG",
    "append_log_rows",
    "messages_from_log",
    "rows_from_log",
]

#: the rows' columns: those of ``messages.parquet`` (one definition, in the dataset stage)
#: plus where the row came from (``source``: its name and values are defined in the dataset
#: stage too, which reads them and which this module imports) and the sample ``weight``
MESSAGE_COLUMNS = (*MESSAGE_COLS, SOURCE, "weight")


def rows_from_log(
    decisions: pd.DataFrame,
    feedback: pd.DataFrame,
    min_age_hours: float = 72.0,
    max_weight: float = 50.0,
    drop_cold_start: bool = False,
) -> pd.DataFrame:
    d = outcomes(decisions, feedback)
    keep = d["action_offer"].notna() & d["known"].astype(bool) & ~d["holdout"].astype(bool)
    if len(d):
        newest = d["ts"].max()
        keep &= d["ts"] <= newest - pd.Timedelta(hours=min_age_hours)
    if drop_cold_start:
        keep &= ~d["cold_start"].astype(bool)
    d = d[keep]
    converted = d["converted"].to_numpy(bool)
    clicked = d["clicked"].to_numpy(bool) | converted
    opened = d["opened"].to_numpy(bool) | clicked
    delivered = d["delivered"].to_numpy(bool) | opened
    cp = d["choice_probability"].astype("float64").fillna(1.0).to_numpy()
    cp = np.where(cp > 0, cp, 1.0)
    sent = pd.to_datetime(d["action_send_at"], utc=True).fillna(pd.to_datetime(d["ts"], utc=True))
    out = pd.DataFrame(
        {
            "message_id": ("L" + d["decision_id"].astype(str)).to_numpy(),
            "customer_id": d["unit"].astype(str).to_numpy(),
            "offer_id": d["action_offer"].astype(str).to_numpy(),
            "channel": d["action_channel"].astype(str).to_numpy(),
            "sent_at": sent.to_numpy(),
            "local_hour": d["action_local_hour"].astype("int64").to_numpy(),
            "policy": ("log:" + d["policy"].fillna("model").astype(str)).to_numpy(),
            "delivered": delivered,
            "opened": opened,
            "clicked": clicked,
            "converted": converted,
            "revenue": np.where(converted, d["revenue"].to_numpy(np.float64), 0.0),
            SOURCE: SOURCE_LOG,
            "weight": np.minimum(1.0 / cp, max_weight),
        }
    )
    out["sent_at"] = pd.to_datetime(out["sent_at"], utc=True)
    return out.sort_values(["sent_at", "customer_id"], kind="stable").reset_index(drop=True)


def messages_from_log(log_dir: Path, **kwargs: float | bool) -> pd.DataFrame:
    """Training rows (messages.parquet schema + ``weight``) from an export folder."""
    decisions, feedback = load_log(log_dir)
    return rows_from_log(decisions, feedback, **kwargs)  # type: ignore[arg-type]


def append_log_rows(messages: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Historical messages (weight 1, source history) + log rows, same columns, time-ordered."""
    base = messages.copy()
    if "weight" not in base:
        base["weight"] = 1.0
    if SOURCE not in base:
        base[SOURCE] = SOURCE_HISTORY
    extra = rows[[c for c in base.columns if c in rows.columns]]
    out = pd.concat([base, extra], ignore_index=True)
    return out.sort_values("sent_at", kind="stable").reset_index(drop=True)
