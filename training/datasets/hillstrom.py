"""The Hillstrom e-mail experiment (Kevin Hillstrom's MineThatData data set, 64,000 customers).

Customers were randomised in thirds to a men's e-mail, a women's e-mail or no e-mail;
outcomes over two weeks: ``visit``, ``conversion``, ``spend``. :func:`load` reads the public
file (``segment`` is the arm), :func:`features` encodes the customer columns as a numeric
matrix, :func:`synthetic_hillstrom` makes data with the same columns and a known effect for
tests. The validation of the measurement tools on it is
:mod:`training.measurement.hillstrom_validation` (``python -m training hillstrom``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.settings import ROOT

__all__ = [
    "ARMS",
    "DEFAULT_PATH",
    "HISTORY_SEGMENTS",
    "OUTCOMES",
    "features",
    "load",
    "synthetic_hillstrom",
]

F64 = npt.NDArray[np.float64]
ARMS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")
OUTCOMES = ("visit", "conversion", "spend")
DEFAULT_PATH = ROOT.parent / "shared/data/hillstrom/hillstrom.csv"
HISTORY_SEGMENTS = (
    "1) $0 - $100",
    "2) $100 - $200",
    "3) $200 - $350",
    "4) $350 - $500",
    "5) $500 - $750",
    "6) $750 - $1,000",
    "7) $1,000 +",
)


def load(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = {"segment", *OUTCOMES} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: not a Hillstrom file, lacks {sorted(missing)}")
    return df


def synthetic_hillstrom(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Data with Hillstrom's columns and a known effect (for tests): e-mails raise visits,
    the men's e-mail for customers who bought men's products, the women's for women's."""
    rng = np.random.default_rng(seed)
    mens = rng.integers(0, 2, n)
    womens = np.where(mens == 1, rng.integers(0, 2, n), 1)
    seg = rng.integers(0, 3, n)
    base = 0.08 + 0.03 * rng.random(n)
    p_visit = (
        base + np.where(seg == 1, 0.04 + 0.08 * mens, 0) + np.where(seg == 2, 0.06 * womens, 0)
    )
    visit = rng.random(n) < p_visit
    conversion = visit & (rng.random(n) < 0.08)
    history = np.round(np.exp(rng.normal(5, 1, n)), 2)
    return pd.DataFrame(
        {
            "recency": rng.integers(1, 13, n),
            "history_segment": np.array(HISTORY_SEGMENTS)[
                np.clip(np.searchsorted([100, 200, 350, 500, 750, 1000], history), 0, 6)
            ],
            "history": history,
            "mens": mens,
            "womens": womens,
            "zip_code": rng.choice(["Surburban", "Rural", "Urban"], n),
            "newbie": rng.integers(0, 2, n),
            "channel": rng.choice(["Phone", "Web", "Multichannel"], n),
            "segment": np.array(ARMS)[seg],
            "visit": visit.astype(np.int64),
            "conversion": conversion.astype(np.int64),
            "spend": np.where(conversion, np.round(rng.gamma(2, 60, n), 2), 0.0),
        }
    )


def features(df: pd.DataFrame) -> F64:
    hist = pd.Categorical(df["history_segment"], categories=list(HISTORY_SEGMENTS)).codes
    zips = pd.Categorical(df["zip_code"], categories=["Urban", "Surburban", "Rural"]).codes
    chan = pd.Categorical(df["channel"], categories=["Phone", "Web", "Multichannel"]).codes
    return np.column_stack(
        [
            df["recency"].to_numpy(np.float64),
            df["history"].to_numpy(np.float64),
            hist.astype(np.float64),
            df["mens"].to_numpy(np.float64),
            df["womens"].to_numpy(np.float64),
            zips.astype(np.float64),
            df["newbie"].to_numpy(np.float64),
            chan.astype(np.float64),
        ]
    )
