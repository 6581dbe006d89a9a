"""The input contract: the raw tables a company brings, and where every stage puts its tables.

Four tables, as Parquet or CSV files named after the table (``customers.parquet`` or
``customers.csv``, ...), in one source folder. ``python -m training ingest --source DIR``
checks them against the columns below and writes the rows that pass to the data folder;
every rejected row is kept with its reason (nothing is dropped silently). The synthetic world's
generator writes the same four tables, so both go through the one path:

    source tables -> ingest -> raw/ -> features -> features/ -> Feast -> training

Categories come from the ``offers`` table, channels from the vocabulary file
(``vocabulary.json`` in the source folder; the synthetic world's channels when absent). A
consent column is expected for every outbound channel (``consent_<channel>``; an absent one of
an in-session channel means consent).

Data folder layout (``NEXTBEST_DATA_DIR``, see :func:`layout`)::

    raw/<table>.parquet       validated input tables (ingest)
    rejected/<table>.parquet  rejected rows with a ``reason`` column (ingest)
    ingest_report.json        counts per table and check (ingest)
    vocabulary.json           channels, categories, outbound channels (ingest)
    features/<view>.parquet   the Feast feature-view sources, point in time (features)
    truth/                    the synthetic world's ground truth (simulation only; optional)
    source/                   the synthetic world's input tables (``generate``; ingest reads them)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "CUSTOMERS",
    "EVENTS",
    "EVENT_TYPES",
    "MESSAGES",
    "OFFERS",
    "TABLES",
    "Column",
    "DataLayout",
    "Table",
    "layout",
]

ColumnType = Literal["string", "timestamp", "float", "int", "bool"]

#: behavioural event types (``return``: a purchase given back; ``cart_abandon``: a cart the
#: site saw left at the end of a session, where the platform reports it)
EVENT_TYPES: tuple[str, ...] = (
    "view",
    "cart_add",
    "cart_remove",
    "cart_abandon",
    "purchase",
    "return",
)


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = True  # the column must exist
    nullable: bool = False  # a row may leave it empty
    description: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    key: str  # unique id column
    columns: tuple[Column, ...]
    description: str = ""
    #: column name prefixes whose columns are expected per vocabulary entry
    per_channel: tuple[str, ...] = field(default_factory=tuple)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


C = Column
CUSTOMERS = Table(
    "customers",
    "customer_id",
    (
        C("customer_id", "string", description="the customer's id (what /decide is called with)"),
        C("signup_at", "timestamp", description="when the customer signed up (UTC)"),
        C("timezone", "string", nullable=True, description="IANA time zone, e.g. Europe/Paris"),
        C("opted_out", "bool", required=False, nullable=True,
          description="opted out of all marketing (default false)"),
        C("lifecycle", "string", required=False, nullable=True,
          description="CRM stage: new, active or lapsing (derived from activity when absent)"),
    ),
    "One row per known customer. Other columns are kept as attributes and reported.",
    per_channel=("consent_",),
)  # fmt: skip
EVENTS = Table(
    "events",
    "event_id",
    (
        C("event_id", "string", description="unique id of the event"),
        C("customer_id", "string", nullable=True, description="known customer (or anonymous_id)"),
        C("anonymous_id", "string", required=False, nullable=True,
          description="visitor id before identification"),
        C("type", "string", description=f"one of {', '.join(EVENT_TYPES)}"),
        C("offer_id", "string", nullable=True, description="offer or product id"),
        C("category", "string", nullable=True,
          description="category (taken from the offer when the id is an offer)"),
        C("timestamp", "timestamp", description="when it happened (UTC)"),
        C("value", "float", required=False, nullable=True, description="amount, >= 0"),
    ),
    "Behaviour: page views, cart changes, purchases and returns.",
)  # fmt: skip
MESSAGES = Table(
    "messages",
    "message_id",
    (
        C("message_id", "string", description="unique id of the send"),
        C("customer_id", "string", description="a customer of the customers table"),
        C("offer_id", "string", description="an offer of the offers table"),
        C("channel", "string", description="a channel of the vocabulary"),
        C("sent_at", "timestamp", description="when it was sent (UTC)"),
        C("delivered", "bool", description="it reached the customer"),
        C("opened", "bool", description="opened (implies delivered)"),
        C("clicked", "bool", required=False, nullable=True, description="clicked (implies opened)"),
        C("converted", "bool", description="bought the offer (attributed to this send)"),
        C("revenue", "float", required=False, nullable=True, description="revenue, >= 0"),
        C("propensity", "float", required=False, nullable=True,
          description="probability with which the sending policy chose this send, in (0, 1]"),
        C("local_hour", "int", required=False, nullable=True,
          description="the customer's local hour at sending, 0-23 (from sent_at and the "
          "customer's time zone when absent)"),
        C("policy", "string", required=False, nullable=True,
          description="which policy chose it (e.g. random, rule); sends marked random are "
          "the unconfounded ones the send-time and channel models learn from"),
        C("delivered_at", "timestamp", required=False, nullable=True, description=""),
        C("opened_at", "timestamp", required=False, nullable=True, description=""),
        C("clicked_at", "timestamp", required=False, nullable=True, description=""),
        C("converted_at", "timestamp", required=False, nullable=True, description=""),
    ),
    "Past marketing sends with their outcomes.",
)  # fmt: skip
OFFERS = Table(
    "offers",
    "offer_id",
    (
        C("offer_id", "string", description="unique id"),
        C("name", "string", description="display name"),
        C("category", "string", description="category: the vocabulary's categories come from here"),
        C("price", "float", description="price, > 0"),
        C("margin", "float", description="margin share of the price, in [0, 1]"),
        C("valid_from", "timestamp", description="first moment it may be offered (UTC)"),
        C("valid_to", "timestamp", description="last moment it may be offered (UTC)"),
    ),
    "The catalogue of offers the service may choose from.",
)  # fmt: skip
TABLES: tuple[Table, ...] = (CUSTOMERS, EVENTS, MESSAGES, OFFERS)


@dataclass(frozen=True)
class DataLayout:
    """Where each stage reads and writes inside one data folder."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    @property
    def vocabulary(self) -> Path:
        return self.root / "vocabulary.json"

    @property
    def ingest_report(self) -> Path:
        return self.root / "ingest_report.json"

    @property
    def source(self) -> Path:
        """where ``generate`` writes the synthetic world's input tables (ingest reads them)"""
        return self.root / "source"

    def raw_table(self, table: str) -> Path:
        return self.raw / f"{table}.parquet"

    def feature_table(self, view: str) -> Path:
        return self.features / f"{view}.parquet"


def layout(root: Path) -> DataLayout:
    return DataLayout(root)
