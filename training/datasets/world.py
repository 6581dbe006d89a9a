"""A seeded synthetic customer world with a known ground truth.

Every customer has latent traits (time zone, preferred engagement hours, per-channel
responsiveness, category affinities, price sensitivity, consent, lifecycle stage). The
generated data is the four raw tables of the input contract (:mod:`contracts.tables`:
customers, behavioural events, a history of marketing messages with outcomes, the offer
catalogue), drawn from those traits with noise; they go through ``ingest`` and ``features``
like a company's tables (:func:`build_world`). The ground-truth functions
(:meth:`World.expected_conversion` and friends) stay available so later work can score any
policy against the oracle.

Everything is vectorised numpy: 100,000 customers and a few million events take a few
seconds. Same ``WorldConfig`` (seed included) gives byte-identical Parquet files.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

# the synthetic world's channels and categories are the default vocabulary of the contract
from contracts.vocabulary import DEFAULT_CATEGORIES as CATEGORIES
from contracts.vocabulary import DEFAULT_CHANNELS as CHANNELS

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "HOUR_PROFILES",
    "LIFECYCLES",
    "World",
    "WorldConfig",
    "build_world",
    "generate_world",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

LIFECYCLES: tuple[str, ...] = ("new", "active", "lapsing")
#: name -> peak local hour of engagement
HOUR_PROFILES: dict[str, float] = {
    "early_riser": 7.0,
    "lunch_break": 12.5,
    "evening": 20.0,
    "night_owl": 23.0,
}
TZ_OFFSETS = np.array([-8, -7, -6, -5, -4, 0, 1, 2, 3, 5, 8, 9, 10], dtype=np.int64)
TZ_WEIGHTS = np.array([8, 3, 8, 12, 2, 14, 20, 8, 3, 6, 5, 4, 7], dtype=np.float64)

# Ground-truth constants (public so tests and the simulator can reason about them).
P_DELIVER = np.array([0.97, 0.92, 0.99, 0.95, 1.0])
CHANNEL_BASE_LOGIT = np.array([-1.4, -2.2, -1.8, -1.9, -2.6])
CONSENT_RATE = np.array([0.92, 0.62, 0.45, 0.75, 1.0])
P_CLICK_GIVEN_OPEN = 0.35
HOUR_KAPPA = 1.3
CONV_BASE_LOGIT = -1.9
LIFECYCLE_SHIFT = np.array([0.25, 0.0, -0.6])
SESSION_RATE = np.array([0.30, 0.16, 0.04])  # sessions per day by lifecycle
MESSAGE_RATE = np.array([0.12, 0.10, 0.07])  # past marketing messages per day


@dataclass(frozen=True)
class WorldConfig:
    """Size and shape of a generated world. Everything is deterministic given ``seed``."""

    n_customers: int = 100_000
    seed: int = 42
    end: str = "2026-11-16T00:00:00+00:00"  # end of the observed history (UTC)
    days: int = 120  # length of the observed history
    n_offers: int = 20
    anonymous_share: float = 0.08  # visitors never identified: events only
    opt_out_share: float = 0.03  # opted out of everything
    random_send_share: float = 0.5  # past sends chosen at random (rest: a simple rule)
    snapshot_days: int = 7  # feature snapshot cadence

    @property
    def end_ts(self) -> datetime:
        return datetime.fromisoformat(self.end).astimezone(UTC)

    @property
    def start_ts(self) -> datetime:
        return self.end_ts - timedelta(days=self.days)


def _logit(p: FloatArray) -> FloatArray:
    return np.log(p / (1.0 - p))


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


@dataclass
class World:
    """Latent traits plus the ground-truth response functions."""

    config: WorldConfig
    offers: pd.DataFrame  # offer_id, category, category_idx, price, margin, valid_from, valid_to
    customer_ids: npt.NDArray[np.str_]
    tz_offset: IntArray
    hour_peak: FloatArray
    hour_profile: IntArray
    channel_resp: FloatArray  # (n, 5) additive logits
    cat_affinity: FloatArray  # (n, n_categories) centred log-affinity
    offer_noise: FloatArray  # (n, n_offers)
    price_sens: FloatArray
    consent: npt.NDArray[np.bool_]  # (n, 5)
    opted_out: npt.NDArray[np.bool_]
    anonymous: npt.NDArray[np.bool_]
    lifecycle: IntArray
    signup_ts: npt.NDArray[np.datetime64]
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- lookup
    def index_of(self, customer_ids: list[str] | npt.NDArray[np.str_]) -> IntArray:
        if not self._index:
            self._index = {cid: i for i, cid in enumerate(self.customer_ids.tolist())}
        return np.array([self._index[c] for c in customer_ids], dtype=np.int64)

    @property
    def price_norm(self) -> FloatArray:
        price = self.offers["price"].to_numpy(dtype=np.float64)
        out: FloatArray = (np.log(price) - np.log(price).mean()) / np.log(price).std()
        return out

    # ---------------------------------------------------------- ground truth
    def hour_score(self, cust: IntArray, local_hour: FloatArray) -> FloatArray:
        """Cosine affinity of a customer for a local hour, in [-1, 1]."""
        out: FloatArray = np.cos(2 * math.pi * (local_hour - self.hour_peak[cust]) / 24.0)
        return out

    def p_open(self, cust: IntArray, channel: IntArray, local_hour: FloatArray) -> FloatArray:
        """P(opened | delivered) for a message at a local hour on a channel."""
        x = (
            CHANNEL_BASE_LOGIT[channel]
            + self.channel_resp[cust, channel]
            + HOUR_KAPPA * self.hour_score(cust, local_hour)
        )
        return _sigmoid(x)

    def p_convert_given_click(self, cust: IntArray, offer: IntArray) -> FloatArray:
        cat = self.offers["category_idx"].to_numpy()[offer]
        x = (
            CONV_BASE_LOGIT
            + 1.6 * self.cat_affinity[cust, cat]
            + 0.5 * self.offer_noise[cust, offer]
            - 1.2 * self.price_sens[cust] * self.price_norm[offer]
            + LIFECYCLE_SHIFT[self.lifecycle[cust]]
        )
        return _sigmoid(x)

    def expected_conversion(
        self, cust: IntArray, offer: IntArray, channel: IntArray, local_hour: FloatArray
    ) -> FloatArray:
        """P(converted) of sending ``offer`` on ``channel`` at ``local_hour``.

        Zero where the customer has not consented to the channel (the message is never sent).
        """
        p = (
            P_DELIVER[channel]
            * self.p_open(cust, channel, local_hour)
            * P_CLICK_GIVEN_OPEN
            * self.p_convert_given_click(cust, offer)
        )
        allowed = self.consent[cust, channel] & ~self.opted_out[cust]
        out: FloatArray = np.where(allowed, p, 0.0)
        return out

    def expected_revenue(
        self, cust: IntArray, offer: IntArray, channel: IntArray, local_hour: FloatArray
    ) -> FloatArray:
        price = self.offers["price"].to_numpy(dtype=np.float64)[offer]
        out: FloatArray = self.expected_conversion(cust, offer, channel, local_hour) * price
        return out

    def oracle(self, cust: IntArray) -> dict[str, npt.NDArray[Any]]:
        """Best (offer, channel, local hour) per customer by expected revenue."""
        n_off, n_ch = len(self.offers), len(CHANNELS)
        best_val = np.zeros(len(cust))
        best = np.zeros((len(cust), 3), dtype=np.int64)
        for h in range(24):
            hours = np.full(len(cust), float(h))
            for ch in range(n_ch):
                chs = np.full(len(cust), ch)
                for o in range(n_off):
                    v = self.expected_revenue(cust, np.full(len(cust), o), chs, hours)
                    better = v > best_val
                    best_val = np.where(better, v, best_val)
                    best[better] = (o, ch, h)
        return {"value": best_val, "offer": best[:, 0], "channel": best[:, 1], "hour": best[:, 2]}

    # ------------------------------------------------------------ persistence
    def save_truth(self, out: Path) -> None:
        """The ground truth into ``out/truth/`` and the world's settings into ``out/world.json``
        (what :meth:`load` reads; delete both and the folder is a company's data folder)."""
        truth = out / "truth"
        truth.mkdir(parents=True, exist_ok=True)
        df = pd.DataFrame(
            {
                "customer_id": self.customer_ids,
                "tz_offset": self.tz_offset,
                "hour_peak": self.hour_peak,
                "hour_profile": np.array(list(HOUR_PROFILES))[self.hour_profile],
                "price_sens": self.price_sens,
                "opted_out": self.opted_out,
                "anonymous": self.anonymous,
                "lifecycle": np.array(LIFECYCLES)[self.lifecycle],
                "signup_ts": self.signup_ts,
            }
        )
        for j, ch in enumerate(CHANNELS):
            df[f"resp_{ch}"] = self.channel_resp[:, j]
            df[f"consent_{ch}"] = self.consent[:, j]
        for j, cat in enumerate(CATEGORIES):
            df[f"aff_{cat}"] = self.cat_affinity[:, j]
        df.to_parquet(truth / "truth_customers.parquet", index=False)
        np.save(truth / "truth_offer_noise.npy", self.offer_noise.astype(np.float32))
        self.offers.to_parquet(truth / "offers.parquet", index=False)
        (out / "world.json").write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, out: Path) -> World:
        """The world of a data folder (its ``world.json`` and ``truth/``)."""
        truth = out / "truth" if (out / "truth").is_dir() else out
        cfg_path = out / "world.json" if (out / "world.json").exists() else truth / "world.json"
        cfg = WorldConfig(**json.loads(cfg_path.read_text()))
        df = pd.read_parquet(truth / "truth_customers.parquet")
        offers = pd.read_parquet(truth / "offers.parquet")
        return cls(
            config=cfg,
            offers=offers,
            customer_ids=df["customer_id"].to_numpy(dtype=str),
            tz_offset=df["tz_offset"].to_numpy(dtype=np.int64),
            hour_peak=df["hour_peak"].to_numpy(dtype=np.float64),
            hour_profile=pd.Categorical(
                df["hour_profile"], categories=list(HOUR_PROFILES)
            ).codes.astype(np.int64),
            channel_resp=df[[f"resp_{c}" for c in CHANNELS]].to_numpy(dtype=np.float64),
            cat_affinity=df[[f"aff_{c}" for c in CATEGORIES]].to_numpy(dtype=np.float64),
            offer_noise=np.load(truth / "truth_offer_noise.npy").astype(np.float64),
            price_sens=df["price_sens"].to_numpy(dtype=np.float64),
            consent=df[[f"consent_{c}" for c in CHANNELS]].to_numpy(dtype=bool),
            opted_out=df["opted_out"].to_numpy(dtype=bool),
            anonymous=df["anonymous"].to_numpy(dtype=bool),
            lifecycle=pd.Categorical(df["lifecycle"], categories=list(LIFECYCLES)).codes.astype(
                np.int64
            ),
            signup_ts=df["signup_ts"].to_numpy(),
        )


# ---------------------------------------------------------------------------- generation


def _make_offers(cfg: WorldConfig, rng: np.random.Generator) -> pd.DataFrame:
    n = cfg.n_offers
    cat_idx = np.arange(n) % len(CATEGORIES)
    price = np.round(np.exp(rng.uniform(np.log(9), np.log(400), n)), 2)
    margin = np.round(rng.uniform(0.15, 0.6, n), 2)
    start = cfg.start_ts
    valid_from = [start - timedelta(days=30)] * n
    valid_to = [cfg.end_ts + timedelta(days=365)] * n
    # A few offers have a narrower validity window, so eligibility rules have work to do.
    valid_to[n - 1] = cfg.end_ts - timedelta(days=10)  # expired before "now"
    valid_from[n - 2] = cfg.end_ts + timedelta(days=60)  # not yet valid
    return pd.DataFrame(
        {
            "offer_id": [f"OFF{i + 1:03d}" for i in range(n)],
            "name": [f"{CATEGORIES[c].title()} offer {i + 1}" for i, c in enumerate(cat_idx)],
            "category": [CATEGORIES[c] for c in cat_idx],
            "category_idx": cat_idx.astype(np.int64),
            "price": price,
            "margin": margin,
            "valid_from": pd.to_datetime(valid_from, utc=True),
            "valid_to": pd.to_datetime(valid_to, utc=True),
            "event_timestamp": pd.to_datetime([start - timedelta(days=30)] * n, utc=True),
        }
    )


def _make_world(cfg: WorldConfig, rng: np.random.Generator) -> World:
    n = cfg.n_customers
    offers = _make_offers(cfg, rng)
    tz = rng.choice(TZ_OFFSETS, size=n, p=TZ_WEIGHTS / TZ_WEIGHTS.sum())
    profile = rng.choice(len(HOUR_PROFILES), size=n, p=[0.25, 0.25, 0.35, 0.15])
    peaks = np.array(list(HOUR_PROFILES.values()))[profile] + rng.normal(0, 0.7, n)
    fav = rng.integers(0, len(CHANNELS), n)
    resp = rng.normal(0, 0.6, (n, len(CHANNELS)))
    resp[np.arange(n), fav] += 1.3
    aff_raw = rng.dirichlet(np.full(len(CATEGORIES), 0.6), n)
    aff = np.log(aff_raw * len(CATEGORIES) + 0.05)
    aff -= aff.mean(axis=1, keepdims=True)
    aff = np.clip(aff, -2.5, 2.5) / 1.5
    offer_noise = rng.normal(0, 1, (n, cfg.n_offers))
    price_sens = rng.beta(2, 2, n)
    consent = rng.random((n, len(CHANNELS))) < CONSENT_RATE
    consent[:, CHANNELS.index("web")] = True
    opted_out = rng.random(n) < cfg.opt_out_share
    anonymous = rng.random(n) < cfg.anonymous_share
    lifecycle = rng.choice(3, size=n, p=[0.15, 0.6, 0.25])
    end = np.datetime64(cfg.end_ts.replace(tzinfo=None), "s")
    tenure_days = np.where(lifecycle == 0, rng.uniform(1, 30, n), rng.uniform(30, 3 * 365, n))
    signup = end - (tenure_days * 86400).astype("timedelta64[s]")
    return World(
        config=cfg,
        offers=offers,
        customer_ids=np.array([f"C{i:07d}" for i in range(n)]),
        tz_offset=tz.astype(np.int64),
        hour_peak=peaks % 24.0,
        hour_profile=profile.astype(np.int64),
        channel_resp=resp,
        cat_affinity=aff,
        offer_noise=offer_noise,
        price_sens=price_sens,
        consent=consent,
        opted_out=opted_out,
        anonymous=anonymous,
        lifecycle=lifecycle.astype(np.int64),
        signup_ts=signup,
    )


def _sample_local_hours(
    world: World, cust: IntArray, rng: np.random.Generator, uniform_share: float = 0.2
) -> FloatArray:
    """Local hour (fractional) drawn from each customer's engagement profile."""
    h = world.hour_peak[cust] + rng.normal(0, 1.8, len(cust))
    uni = rng.random(len(cust)) < uniform_share
    h = np.where(uni, rng.uniform(0, 24, len(cust)), h)
    out: FloatArray = h % 24.0
    return out


def _active_window(world: World, cust: IntArray) -> tuple[FloatArray, FloatArray]:
    """(start, length) in days since history start during which a customer can act."""
    cfg = world.config
    start = np.datetime64(cfg.start_ts.replace(tzinfo=None), "s")
    since_signup = (world.signup_ts[cust] - start).astype(np.float64) / 86400.0
    begin = np.clip(since_signup, 0, cfg.days)
    # Lapsing customers fade out: they stop acting in the last third of the history.
    end = np.where(world.lifecycle[cust] == 2, cfg.days * 0.66, cfg.days)
    length = np.maximum(end - begin, 0.0)
    return begin, length


def _gen_events(world: World, rng: np.random.Generator) -> pd.DataFrame:
    cfg = world.config
    n = cfg.n_customers
    cust_all = np.arange(n)
    begin, length = _active_window(world, cust_all)
    n_sess = rng.poisson(SESSION_RATE[world.lifecycle] * length)
    cust = np.repeat(cust_all, n_sess)
    day = begin[cust] + rng.random(len(cust)) * length[cust]
    local_h = _sample_local_hours(world, cust, rng)
    # day index is the UTC day; local hour -> UTC offset
    t_days = np.floor(day) + (local_h - world.tz_offset[cust]) / 24.0
    t_days = np.clip(t_days, 0, cfg.days - 1e-4)
    start = np.datetime64(cfg.start_ts.replace(tzinfo=None), "s")
    sess_ts = start + (t_days * 86400).astype("timedelta64[s]")
    n_s = len(cust)
    # views: 1 + Poisson(1.2) per session, category by affinity (Gumbel-max)
    n_views = 1 + rng.poisson(1.2, n_s)
    v_sess = np.repeat(np.arange(n_s), n_views)
    v_cust = cust[v_sess]
    logits = 1.5 * world.cat_affinity[v_cust] + rng.gumbel(size=(len(v_sess), len(CATEGORIES)))
    v_cat = logits.argmax(axis=1)
    offers_by_cat = [
        world.offers.index[world.offers["category_idx"] == c].to_numpy()
        for c in range(len(CATEGORIES))
    ]
    pick = rng.random(len(v_sess))
    v_offer = np.empty(len(v_sess), dtype=np.int64)
    for c, idx in enumerate(offers_by_cat):
        m = v_cat == c
        v_offer[m] = idx[(pick[m] * len(idx)).astype(np.int64)]
    v_rank = np.arange(len(v_sess)) - np.repeat(np.cumsum(n_views) - n_views, n_views)
    v_ts = sess_ts[v_sess] + (v_rank * 40).astype("timedelta64[s]")
    # last viewed offer of a session may go to the cart
    last = np.cumsum(n_views) - 1
    last_offer = v_offer[last]
    p_cart = 0.15 + 0.25 * _sigmoid(
        1.6 * world.cat_affinity[cust, world.offers["category_idx"].to_numpy()[last_offer]]
    )
    carted = rng.random(n_s) < p_cart
    p_buy = world.p_convert_given_click(cust, last_offer) * 1.4
    bought = carted & (rng.random(n_s) < np.clip(p_buy, 0, 0.95))
    abandoned = carted & ~bought
    price = world.offers["price"].to_numpy()
    cats = np.array(CATEGORIES)
    off_ids = world.offers["offer_id"].to_numpy()

    def frame(
        c: IntArray, etype: str, off: IntArray, ts: npt.NDArray[Any], value: FloatArray
    ) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "cust_idx": c,
                "event_type": etype,
                "offer_id": off_ids[off],
                "category": cats[world.offers["category_idx"].to_numpy()[off]],
                "ts": ts,
                "value": value,
            }
        )

    parts = [
        frame(v_cust, "page_view", v_offer, v_ts, np.zeros(len(v_sess))),
        frame(
            cust[carted],
            "cart_add",
            last_offer[carted],
            sess_ts[carted] + (n_views[carted] * 40 + 60).astype("timedelta64[s]"),
            price[last_offer[carted]],
        ),
        frame(
            cust[bought],
            "purchase",
            last_offer[bought],
            sess_ts[bought] + (n_views[bought] * 40 + 300).astype("timedelta64[s]"),
            price[last_offer[bought]],
        ),
        frame(
            cust[abandoned],
            "cart_abandon",
            last_offer[abandoned],
            sess_ts[abandoned] + (n_views[abandoned] * 40 + 1800).astype("timedelta64[s]"),
            price[last_offer[abandoned]],
        ),
    ]
    return pd.concat(parts, ignore_index=True)


def _gen_messages(world: World, rng: np.random.Generator) -> pd.DataFrame:
    cfg = world.config
    n = cfg.n_customers
    cust_all = np.arange(n)
    begin, length = _active_window(world, cust_all)
    reachable = ~world.opted_out & ~world.anonymous
    lam = np.where(reachable, MESSAGE_RATE[world.lifecycle] * np.maximum(length, 3.0), 0.0)
    n_msg = rng.poisson(lam)
    cust = np.repeat(cust_all, n_msg)
    m = len(cust)
    is_random = rng.random(m) < cfg.random_send_share
    # channel: random consented (Gumbel-max over consented) or rule (email if allowed else web)
    g = rng.gumbel(size=(m, len(CHANNELS))) + np.where(world.consent[cust], 0.0, -np.inf)
    ch_random = g.argmax(axis=1)
    email = CHANNELS.index("email")
    ch_rule = np.where(world.consent[cust, email], email, CHANNELS.index("web"))
    channel = np.where(is_random, ch_random, ch_rule)
    # offer: random, or the rule "one of the three best sellers"
    n_off = cfg.n_offers
    popular = np.array([0, 2, 5]) % n_off
    offer = np.where(
        is_random, rng.integers(0, n_off - 2, m), popular[rng.integers(0, 3, m)]
    )  # the last two offers are outside their validity window
    local_h = np.where(is_random, rng.integers(0, 24, m), 10).astype(np.float64)
    day = np.floor(begin[cust] + rng.random(m) * np.maximum(length[cust], 1.0))
    t_days = np.clip(day + (local_h - world.tz_offset[cust]) / 24.0, 0, cfg.days - 1e-4)
    start = np.datetime64(cfg.start_ts.replace(tzinfo=None), "s")
    sent = start + (t_days * 86400).astype("timedelta64[s]")
    delivered = rng.random(m) < P_DELIVER[channel]
    opened = delivered & (rng.random(m) < world.p_open(cust, channel, local_h))
    clicked = opened & (rng.random(m) < P_CLICK_GIVEN_OPEN)
    converted = clicked & (rng.random(m) < world.p_convert_given_click(cust, offer))
    price = world.offers["price"].to_numpy()
    # the logging policy's probability of the chosen (offer, channel, local hour): the mix of
    # the random policy (consented channel, offer and hour uniform) and the rule
    n_consent = world.consent[cust].sum(axis=1)
    p_random = (
        world.consent[cust, channel]
        / np.maximum(n_consent, 1)
        * (offer < n_off - 2)
        / (n_off - 2)
        / 24.0
    )
    p_rule = (
        (channel == ch_rule)
        * (popular[None, :] == offer[:, None]).sum(axis=1)
        / 3.0
        * (local_h == 10)
    )
    propensity = cfg.random_send_share * p_random + (1 - cfg.random_send_share) * p_rule
    order = np.lexsort((cust, sent))
    df = pd.DataFrame(
        {
            "cust_idx": cust,
            "offer_id": world.offers["offer_id"].to_numpy()[offer],
            "channel": np.array(CHANNELS)[channel],
            "sent_at": sent,
            "local_hour": local_h.astype(np.int64),
            "policy": np.where(is_random, "random", "rule"),
            "delivered": delivered,
            "opened": opened,
            "clicked": clicked,
            "converted": converted,
            "revenue": np.where(converted, price[offer], 0.0),
            "propensity": propensity,
        }
    ).iloc[order]
    df.insert(0, "message_id", [f"M{i:09d}" for i in range(m)])
    return df.reset_index(drop=True)


def _timezone(offset: int) -> str:
    """The IANA name of a fixed UTC offset in whole hours (``Etc/GMT+8`` is UTC-8)."""
    if offset == 0:
        return "Etc/UTC"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def _customers_table(world: World) -> pd.DataFrame:
    """The contract's ``customers`` table: identified customers and what a CRM knows."""
    known = ~world.anonymous
    tz_names = {int(o): _timezone(int(o)) for o in TZ_OFFSETS}
    df = pd.DataFrame(
        {
            "customer_id": world.customer_ids[known],
            "signup_at": pd.to_datetime(world.signup_ts[known]).tz_localize("UTC"),
            "timezone": [tz_names[int(o)] for o in world.tz_offset[known]],
            "opted_out": world.opted_out[known],
            "lifecycle": np.array(LIFECYCLES)[world.lifecycle[known]],
        }
    )
    for j, ch in enumerate(CHANNELS):
        df[f"consent_{ch}"] = world.consent[known, j]
    return df


def generate_world(cfg: WorldConfig, out: Path) -> dict[str, int]:
    """Generate the world's input tables into ``out/source/`` (the four tables of the input
    contract, :mod:`contracts.tables`, and its vocabulary) and its ground truth into
    ``out/truth/`` + ``out/world.json``; returns row counts.

    Nothing else: the features come from ``ingest`` and ``features``, as a company's do
    (:func:`build_world` runs the three).
    """
    from contracts.vocabulary import DEFAULT_VOCABULARY

    source = out / "source"
    source.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    world = _make_world(cfg, rng)
    events = _gen_events(world, rng)
    messages = _gen_messages(world, rng)
    # converted messages produce purchase events an hour later (attributed)
    conv = messages[messages["converted"]]
    price = dict(zip(world.offers["offer_id"], world.offers["price"], strict=True))
    cat = dict(zip(world.offers["offer_id"], world.offers["category"], strict=True))
    msg_buys = pd.DataFrame(
        {
            "cust_idx": conv["cust_idx"].to_numpy(),
            "event_type": "purchase",
            "offer_id": conv["offer_id"].to_numpy(),
            "category": conv["offer_id"].map(cat).to_numpy(),
            "ts": conv["sent_at"].to_numpy() + np.timedelta64(3600, "s"),
            "value": conv["offer_id"].map(price).to_numpy(dtype=np.float64),
        }
    )
    events = pd.concat([events, msg_buys], ignore_index=True)
    events = events.sort_values(["ts", "cust_idx"], kind="stable").reset_index(drop=True)
    # the history ends at cfg.end: what happens later is not observed yet
    end = np.datetime64(cfg.end_ts.replace(tzinfo=None), "s")
    events = events[events["ts"].to_numpy() < end].reset_index(drop=True)

    ids = world.customer_ids
    idx = events["cust_idx"].to_numpy()
    # a visit before sign-up is an anonymous visitor's (the id is only known from sign-up on)
    anon = world.anonymous[idx] | (events["ts"].to_numpy() < world.signup_ts[idx])
    ev_out = pd.DataFrame(
        {
            "event_id": [f"E{i:010d}" for i in range(len(events))],
            "customer_id": np.where(anon, None, ids[idx]),
            "anonymous_id": np.where(
                anon, np.char.replace(ids[idx], "C", "A"), np.array(None, dtype=object)
            ),
            "type": np.where(
                events["event_type"].to_numpy() == "page_view", "view", events["event_type"]
            ),
            "offer_id": events["offer_id"].to_numpy(),
            "category": events["category"].to_numpy(),
            "timestamp": pd.to_datetime(events["ts"].to_numpy()).tz_localize("UTC"),
            "value": events["value"].to_numpy(dtype=np.float64),
        }
    )
    msg_out = messages.drop(columns=["cust_idx"]).copy()
    msg_out.insert(1, "customer_id", ids[messages["cust_idx"].to_numpy()])
    msg_out["sent_at"] = pd.to_datetime(msg_out["sent_at"]).dt.tz_localize("UTC")
    offers = world.offers[
        ["offer_id", "name", "category", "price", "margin", "valid_from", "valid_to"]
    ]
    customers = _customers_table(world)

    customers.to_parquet(source / "customers.parquet", index=False)
    offers.to_parquet(source / "offers.parquet", index=False)
    ev_out.to_parquet(source / "events.parquet", index=False)
    msg_out.to_parquet(source / "messages.parquet", index=False)
    (source / "vocabulary.json").write_bytes(DEFAULT_VOCABULARY.to_json())
    world.save_truth(out)
    return {
        "customers": len(customers),
        "anonymous_visitors": int(world.anonymous.sum()),
        "offers": len(offers),
        "events": len(ev_out),
        "messages": len(msg_out),
    }


def build_world(cfg: WorldConfig, out: Path, engine: str = "duckdb") -> dict[str, Any]:
    """Generate a world into ``out`` and run it through ``ingest`` and ``features``, the
    path a company's tables take; returns the generator's counts and the ingest report."""
    from training.features import compute_features
    from training.ingest import ingest

    counts = generate_world(cfg, out)
    report = ingest(out / "source", out, as_of=cfg.end_ts)
    rows = compute_features(out, engine=engine)
    return {"generated": counts, "ingest": report, "features": rows}
