"""Public data sets -> the input contract's raw tables (:mod:`contracts.tables`).

``python -m training adapt <set> --source FILE --out DIR`` writes ``customers``, ``events``,
``messages`` and ``offers`` as Parquet plus ``vocabulary.json`` into ``DIR``: a source folder
for ``python -m training ingest --source DIR``. Every mapping is below and in
``docs/training.md`` (what each set can and cannot train); nothing is invented beyond the
nominal values listed there (a campaign date where the data has none, a price of 1 where it
has no prices).

| set | customers | events | messages | offers |
|---|---|---|---|---|
| ``hillstrom`` | 64,000 | one purchase per customer (recency, past-year spend) | the 42,694 e-mails of the two e-mail arms, visit / conversion / spend, propensity 1/3 | the two e-mail versions |
| ``bank`` | one per call (the file has no client id) | none | 41,188 calls over ``cellular`` / ``telephone`` | one (the term deposit) |
| ``retail`` | the 4,372 identified buyers | purchases and returns (invoice lines) | none | the stock codes, categories from keywords |
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from contracts.tables import CUSTOMERS, EVENTS, MESSAGES, OFFERS, Table

__all__ = [
    "ADAPTERS",
    "BANK_START",
    "HILLSTROM_CAMPAIGN",
    "RETAIL_CATEGORIES",
    "Adapted",
    "adapt",
    "adapt_bank",
    "adapt_hillstrom",
    "adapt_retail",
    "retail_category",
]

#: Hillstrom's campaign has no date in the data: a nominal send time (the data set was
#: published on 2008-03-20; outcomes cover the two weeks after the send)
HILLSTROM_CAMPAIGN = pd.Timestamp("2008-03-03 09:00", tz="UTC")
#: Bank Marketing's first contact month (the file runs May 2008 to November 2010, in order)
BANK_START = (2008, 5)
#: an "opened" call: the client stayed on the line at least this long (an answered call)
BANK_ANSWERED_S = 30
#: Online Retail categories from keywords in the product description, first match wins
RETAIL_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("christmas", r"CHRISTMAS|XMAS|ADVENT|SNOWFLAKE|REINDEER|SANTA"),
    ("bags", r"\bBAG\b|BAGS|TOTE|SHOPPER|PURSE"),
    ("lighting", r"CANDLE|T-LIGHT|LIGHT|LANTERN|LAMP|NIGHT LIGHT"),
    ("kitchen", r"MUG|CUP|PLATE|BOWL|TEA|CAKE|LUNCH|JAR|BOTTLE|SPOON|TIN|BAKING|NAPKIN"),
    ("stationery", r"CARD|WRAP|PAPER|NOTEBOOK|PENCIL|\bPEN\b|STICKER|ENVELOPE|BOOK"),
    ("toys", r"TOY|GAME|DOLL|CHILDREN|KIDS|PUZZLE|SPACEBOY|DOLLY"),
    ("garden", r"GARDEN|PLANT|FLOWER|BIRD|WATERING"),
    ("decor", r"HEART|DECORATION|SIGN|FRAME|CLOCK|HOOK|CUSHION|HANGING|ORNAMENT|VASE"),
)
RETAIL_OTHER = "other"
#: Online Retail's countries with a single obvious time zone (others: unknown)
RETAIL_TIMEZONES = {
    "United Kingdom": "Europe/London",
    "EIRE": "Europe/Dublin",
    "Germany": "Europe/Berlin",
    "France": "Europe/Paris",
    "Netherlands": "Europe/Amsterdam",
    "Spain": "Europe/Madrid",
    "Belgium": "Europe/Brussels",
    "Switzerland": "Europe/Zurich",
    "Portugal": "Europe/Lisbon",
    "Italy": "Europe/Rome",
    "Norway": "Europe/Oslo",
    "Sweden": "Europe/Stockholm",
    "Denmark": "Europe/Copenhagen",
    "Finland": "Europe/Helsinki",
    "Austria": "Europe/Vienna",
    "Poland": "Europe/Warsaw",
    "Japan": "Asia/Tokyo",
    "Israel": "Asia/Jerusalem",
    "Singapore": "Asia/Singapore",
}


@dataclass
class Adapted:
    """The contract tables of one data set, and its vocabulary (channels, categories)."""

    customers: pd.DataFrame
    events: pd.DataFrame
    messages: pd.DataFrame
    offers: pd.DataFrame
    channels: tuple[str, ...]
    outbound: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        return {
            "customers": len(self.customers),
            "events": len(self.events),
            "messages": len(self.messages),
            "offers": len(self.offers),
        }

    def write(self, out: Path) -> dict[str, int]:
        """Parquet per table + ``vocabulary.json`` into ``out``; returns the row counts."""
        out.mkdir(parents=True, exist_ok=True)
        for table, df in (
            (CUSTOMERS, self.customers),
            (EVENTS, self.events),
            (MESSAGES, self.messages),
            (OFFERS, self.offers),
        ):
            _typed(table, df).to_parquet(out / f"{table.name}.parquet", index=False)
        categories = sorted({str(c) for c in self.offers["category"]})
        vocab = {
            "channels": list(self.channels),
            "categories": categories,
            "outbound": list(self.outbound),
        }
        (out / "vocabulary.json").write_text(json.dumps(vocab, indent=2) + "\n")
        return self.counts()


_PANDAS = {"string": "string", "float": "float64", "int": "int64", "bool": "boolean"}


def _typed(table: Table, df: pd.DataFrame) -> pd.DataFrame:
    """The contract's columns in its order (absent optional ones left out), typed; extra
    columns (attributes) follow."""
    out = pd.DataFrame(index=df.index)
    for col in table.columns:
        if col.name not in df:
            if col.required:
                out[col.name] = pd.Series(pd.NA, index=df.index)
            else:
                continue
        v = df[col.name] if col.name in df else out[col.name]
        if col.type == "timestamp":
            out[col.name] = pd.to_datetime(v, utc=True)
        else:
            out[col.name] = v.astype(_PANDAS[col.type])  # type: ignore[call-overload]
    for c in df.columns:
        if c not in out:
            out[c] = df[c]
    return out.reset_index(drop=True)


def _empty(table: Table) -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series([], dtype="object") for c in table.columns})


# ------------------------------------------------------------------------------ Hillstrom


def adapt_hillstrom(path: Path) -> Adapted:
    """Hillstrom's e-mail campaign: 64,000 customers randomised in thirds to a men's e-mail,
    a women's e-mail or none (source file ``hillstrom.csv``).

    * customers: ``H<row>``; ``signup_at`` nominal (the campaign minus 180 days for
      ``newbie`` = 1, minus 2 years otherwise: the data only says "new in the last 12
      months"; never after the last purchase); consent to e-mail (they were e-mailed or could have been); no time zone;
      ``zip_code``, ``purchase_channel``, ``history_segment``, ``mens``, ``womens`` kept as
      attributes.
    * events: the last purchase, ``recency`` months (of 30 days) before the campaign, value =
      the past-year spend ``history``, category men's or women's (one event per flag set,
      the spend split evenly; none for customers with neither flag).
    * messages: one e-mail per customer of the two e-mail arms at the nominal campaign time
      (:data:`HILLSTROM_CAMPAIGN`); delivered; ``opened`` = ``clicked`` = ``visit`` (a site
      visit within two weeks, the only engagement recorded); ``converted`` =
      ``conversion``; ``revenue`` = ``spend``; ``propensity`` = 1/3 (the randomised design);
      ``policy`` = random. The "No E-Mail" third has no message (it is the holdout).
    * offers: ``mens_email`` and ``womens_email`` (categories ``mens``, ``womens``); no
      prices in the data: price 1 and margin 1 (nominal, so value = conversion).
    """
    df = pd.read_csv(path)
    n = len(df)
    ids = pd.Series([f"H{i:05d}" for i in range(n)])
    campaign = HILLSTROM_CAMPAIGN
    newbie = df["newbie"].to_numpy(dtype=bool)
    days = np.maximum(np.where(newbie, 180, 730), df["recency"].to_numpy() * 30 + 1)
    signup = campaign - pd.to_timedelta(days, unit="D")
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_at": signup,
            "timezone": pd.Series([None] * n, dtype="string"),
            "opted_out": False,
            "consent_email": True,
            "zip_code": df["zip_code"].astype(str),
            "purchase_channel": df["channel"].astype(str),
            "history_segment": df["history_segment"].astype(str),
            "mens": df["mens"].astype(int),
            "womens": df["womens"].astype(int),
        }
    )
    ev = []
    for flag in ("mens", "womens"):
        has = df[flag].to_numpy(dtype=bool)
        share = 1.0 / np.maximum(df["mens"].to_numpy() + df["womens"].to_numpy(), 1)
        part = pd.DataFrame(
            {
                "event_id": ids[has].to_numpy() + f"-last-{flag}",
                "customer_id": ids[has].to_numpy(),
                "type": "purchase",
                "offer_id": pd.Series([None] * int(has.sum()), dtype="string"),
                "category": flag,
                "timestamp": campaign
                - pd.to_timedelta(df.loc[has, "recency"].to_numpy() * 30, unit="D"),
                "value": (df.loc[has, "history"].to_numpy() * share[has]).round(2),
            }
        )
        ev.append(part)
    events = pd.concat(ev, ignore_index=True).sort_values(["timestamp", "event_id"])
    arms = {"Mens E-Mail": "mens_email", "Womens E-Mail": "womens_email"}
    sent = df["segment"].isin(list(arms)).to_numpy()
    visit = df.loc[sent, "visit"].to_numpy(dtype=bool)
    messages = pd.DataFrame(
        {
            "message_id": "M" + ids[sent].str[1:].to_numpy(),
            "customer_id": ids[sent].to_numpy(),
            "offer_id": df.loc[sent, "segment"].map(arms).to_numpy(),
            "channel": "email",
            "sent_at": campaign,
            "delivered": True,
            "opened": visit,
            "clicked": visit,
            "converted": df.loc[sent, "conversion"].to_numpy(dtype=bool),
            "revenue": df.loc[sent, "spend"].to_numpy(dtype=np.float64),
            "propensity": 1.0 / 3.0,
            "policy": "random",
        }
    )
    offers = pd.DataFrame(
        {
            "offer_id": ["mens_email", "womens_email"],
            "name": ["Men's merchandise e-mail", "Women's merchandise e-mail"],
            "category": ["mens", "womens"],
            "price": 1.0,
            "margin": 1.0,
            "valid_from": campaign - pd.Timedelta(days=1),
            "valid_to": campaign + pd.Timedelta(days=3650),
        }
    )
    return Adapted(customers, events, messages, offers, ("email",), ("email",))


# ---------------------------------------------------------------------------------- Bank

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def bank_dates(months: pd.Series, weekdays: pd.Series) -> pd.Series:
    """Calendar dates of the in-order Bank Marketing rows, which give only month and weekday.

    The year starts at :data:`BANK_START` and goes up whenever the month goes down; within a
    month, each change of weekday moves to the next date with that weekday (rows of one day
    are contiguous), never past the month's end. Approximate by construction (the day of the
    month is not in the data), monotone, and on the right weekday.
    """
    year, month = BANK_START
    cur: pd.Timestamp | None = None
    last_day: str | None = None
    out: list[pd.Timestamp] = []
    for mon, day in zip(months.str.lower(), weekdays.str.lower(), strict=True):
        m = _MONTHS.index(mon) + 1
        if cur is not None and m != cur.month:
            if m < cur.month:
                year += 1
            cur, last_day = None, None
        month = m
        target = _DAYS.index(day)
        if cur is None:
            start = pd.Timestamp(year=year, month=month, day=1)
            cur = start + pd.Timedelta(days=(target - start.weekday()) % 7)
        elif day != last_day:
            nxt = cur + pd.Timedelta(days=(target - cur.weekday()) % 7 or 7)
            if nxt.month == month:
                cur = nxt
        last_day = day
        out.append(cur)
    return pd.Series(out)


def adapt_bank(path: Path) -> Adapted:
    """UCI Bank Marketing's phone campaign (``bank-additional-full.csv[.gz]``; ``;``-separated).

    * customers: one per row (``B<row>``: the file has no client id, so a client called in
      two campaigns appears twice); time zone Europe/Lisbon; consent to both channels (the
      bank called them); ``signup_at`` nominal, a year before the call; ``age``, ``job``,
      ``marital``, ``education``, ``default``, ``housing``, ``loan`` kept as attributes.
    * messages: the campaign's last call per row, channel ``cellular`` or ``telephone``
      (``contact``); ``sent_at`` at 12:00 Lisbon on a date rebuilt from the in-order month
      and weekday (:func:`bank_dates`; the hour is not in the data); delivered; ``opened`` =
      the client stayed on the line at least 30 s (``duration``: an answered call; duration
      is an outcome, never a feature); ``converted`` = ``y`` (subscribed); no propensity
      and no policy (channel and timing were not randomised).
    * offers: one, the term deposit (category ``deposit``, nominal price and margin 1).
    * events: none.
    """
    df = pd.read_csv(path, sep=";")
    n = len(df)
    ids = pd.Series([f"B{i:05d}" for i in range(n)])
    day = bank_dates(df["month"].astype(str), df["day_of_week"].astype(str))
    sent = (day + pd.Timedelta(hours=12)).dt.tz_localize("Europe/Lisbon").dt.tz_convert("UTC")
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_at": sent - pd.Timedelta(days=365),
            "timezone": "Europe/Lisbon",
            "opted_out": False,
            "consent_cellular": True,
            "consent_telephone": True,
            **{c: df[c].astype(str) for c in ("job", "marital", "education", "default")},
            **{c: df[c].astype(str) for c in ("housing", "loan")},
            "age": df["age"].astype(int),
        }
    )
    messages = pd.DataFrame(
        {
            "message_id": "C" + ids.str[1:],
            "customer_id": ids,
            "offer_id": "term_deposit",
            "channel": df["contact"].astype(str),
            "sent_at": sent,
            "delivered": True,
            "opened": df["duration"].to_numpy() >= BANK_ANSWERED_S,
            "converted": (df["y"].astype(str) == "yes").to_numpy(),
            "revenue": 0.0,
        }
    )
    messages["converted"] &= messages["opened"]
    offers = pd.DataFrame(
        {
            "offer_id": ["term_deposit"],
            "name": ["Term deposit"],
            "category": ["deposit"],
            "price": [1.0],
            "margin": [1.0],
            "valid_from": [pd.Timestamp("2008-01-01", tz="UTC")],
            "valid_to": [pd.Timestamp("2011-12-31", tz="UTC")],
        }
    )
    return Adapted(
        customers,
        _empty(EVENTS),
        messages,
        offers,
        ("cellular", "telephone"),
        ("cellular", "telephone"),
    )


# --------------------------------------------------------------------------- Online Retail


def retail_category(description: str) -> str:
    """The category of an Online Retail product from its description (first keyword rule
    of :data:`RETAIL_CATEGORIES` that matches, else ``other``)."""
    text = str(description).upper()
    for name, pattern in RETAIL_CATEGORIES:
        if re.search(pattern, text):
            return name
    return RETAIL_OTHER


def adapt_retail(path: Path) -> Adapted:
    """UCI Online Retail's invoice lines (``online_retail.csv.gz``), a UK gift wholesaler.

    * events: one per invoice line of an identified customer (rows without ``CustomerID``
      are left out: the data has no anonymous id); ``purchase``, or ``return`` for
      cancellations (invoice ``C...``); ``offer_id`` = ``StockCode``; value = |quantity| x
      unit price; timestamp = ``InvoiceDate`` read as UK time.
    * offers: the catalogue of stock codes sold: name = the most frequent description,
      category from keywords (:func:`retail_category`), price = the median unit price of its
      sales; no margins in the data: margin 1 (nominal); valid from its first to its last
      sale.
    * customers: the identified buyers; ``signup_at`` = their first invoice (first seen);
      time zone from ``Country`` where the country has one (else unknown); e-mail consent
      unknown (empty).
    * messages: none. Online Retail trains none of the three models on its own.
    """
    df = pd.read_csv(
        path, dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str, "Country": str}
    )
    df = df[df["CustomerID"].notna() & (df["UnitPrice"] > 0)].copy()
    df["customer_id"] = df["CustomerID"].str.replace(r"\.0$", "", regex=True)
    df["ts"] = (
        pd.to_datetime(df["InvoiceDate"])
        .dt.tz_localize("Europe/London", ambiguous="NaT", nonexistent="shift_forward")
        .dt.tz_convert("UTC")
    )
    df = df[df["ts"].notna()]
    cancel = df["InvoiceNo"].str.startswith("C") | (df["Quantity"] < 0)
    line = df.groupby("InvoiceNo").cumcount().astype(str)
    desc = df["Description"].fillna("").astype(str)
    cat_of_desc = {d: retail_category(d) for d in desc.unique()}
    events = pd.DataFrame(
        {
            "event_id": df["InvoiceNo"] + "-" + line,
            "customer_id": df["customer_id"],
            "type": np.where(cancel, "return", "purchase"),
            "offer_id": df["StockCode"],
            "category": desc.map(cat_of_desc),
            "timestamp": df["ts"],
            "value": (df["Quantity"].abs() * df["UnitPrice"]).round(2),
        }
    ).sort_values(["timestamp", "event_id"], kind="stable")
    sales = df[~cancel]
    names = (
        sales.assign(desc=desc)
        .groupby(["StockCode", "desc"])
        .size()
        .reset_index(name="n")
        .sort_values(["StockCode", "n"], ascending=[True, False], kind="stable")
        .drop_duplicates("StockCode")
        .set_index("StockCode")["desc"]
    )
    g = sales.groupby("StockCode")
    offers = pd.DataFrame(
        {
            "offer_id": g.size().index,
            "price": g["UnitPrice"].median().round(2).to_numpy(),
            "valid_from": g["ts"].min().to_numpy(),
            "valid_to": g["ts"].max().to_numpy(),
        }
    )
    offers["name"] = offers["offer_id"].map(names).fillna(offers["offer_id"])
    offers["name"] = offers["name"].where(offers["name"].str.len() > 0, offers["offer_id"])
    offers["category"] = offers["name"].map(retail_category)
    offers["margin"] = 1.0
    # returns of codes never sold in the data name no catalogue offer: keep the category
    events.loc[~events["offer_id"].isin(offers["offer_id"]), "offer_id"] = None
    c = df.groupby("customer_id").agg(signup_at=("ts", "min"), country=("Country", "first"))
    customers = pd.DataFrame(
        {
            "customer_id": c.index,
            "signup_at": c["signup_at"].to_numpy(),
            "timezone": c["country"].map(RETAIL_TIMEZONES).astype("string").to_numpy(),
            "opted_out": False,
            "consent_email": pd.Series([pd.NA] * len(c), dtype="boolean").to_numpy(),
            "country": c["country"].to_numpy(),
        }
    )
    return Adapted(customers, events, _empty(MESSAGES), offers, ("email",), ("email",))


ADAPTERS: dict[str, Callable[[Path], Adapted]] = {
    "hillstrom": adapt_hillstrom,
    "bank": adapt_bank,
    "retail": adapt_retail,
}


def adapt(name: str, source: Path, out: Path) -> dict[str, int]:
    """Run the adapter ``name`` on ``source`` and write the contract tables into ``out``."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown data set {name!r}: one of {', '.join(ADAPTERS)}")
    return ADAPTERS[name](source).write(out)
