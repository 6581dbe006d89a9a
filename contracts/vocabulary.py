"""The names a deployment's data, features and models share: channels and offer categories.

A :class:`Vocabulary` is configuration, not code: the default below is the synthetic world's,
and a company's own comes from its data (the categories of its offer catalogue) and its
configuration (the channels it sends on). It travels with the trained models (the bundle
manifest records it), so the service always builds model inputs with the vocabulary the
models were trained on.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

__all__ = [
    "DEFAULT_CATEGORIES",
    "DEFAULT_CHANNELS",
    "DEFAULT_OUTBOUND",
    "DEFAULT_VOCABULARY",
    "Vocabulary",
    "load_vocabulary",
]

#: the synthetic world's channels (``web`` and ``in_app`` are shown in a session)
DEFAULT_CHANNELS: tuple[str, ...] = ("email", "push", "sms", "in_app", "web")
#: channels that reach a person outside a session: they need explicit consent.
#: The consent rule for every channel (profile features ``consent_<channel>``): an outbound
#: channel is used only when the known customer's consent is 1 (unknown: no); any other
#: channel only when it is not known to be anything but 1 (an anonymous visitor gets the
#: generic in-session experience); a customer with ``opted_out`` = 1 gets no action at all
#: and no behavioural data of theirs is collected (``POST /events`` skips their events).
DEFAULT_OUTBOUND: tuple[str, ...] = ("email", "push", "sms")
#: the synthetic world's offer categories
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "outdoor",
    "apparel",
    "electronics",
    "home",
    "beauty",
    "books",
    "sports",
    "grocery",
)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class Vocabulary(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Channels (in model order), which of them are outbound, and offer categories."""

    channels: tuple[str, ...] = DEFAULT_CHANNELS
    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    outbound: tuple[str, ...] = DEFAULT_OUTBOUND

    def __post_init__(self) -> None:
        for kind, names in (("channel", self.channels), ("category", self.categories)):
            if not names:
                raise ValueError(f"the vocabulary needs at least one {kind}")
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {kind} names: {list(names)}")
            bad = [n for n in names if not _NAME.match(n)]
            if bad:
                raise ValueError(
                    f"{kind} names must be lower-case identifiers (a-z, 0-9, _; at most 32 "
                    f"characters, starting with a letter): {bad}"
                )
        unknown = sorted(set(self.outbound) - set(self.channels))
        if unknown:
            raise ValueError(f"outbound channels {unknown} are not in channels")

    def channel_index(self, channel: str) -> int:
        return self.channels.index(channel)

    def category_index(self, category: str) -> int:
        return self.categories.index(category)

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)


DEFAULT_VOCABULARY = Vocabulary()


def load_vocabulary(path: Path | str) -> Vocabulary:
    """A vocabulary from a JSON file (``{"channels": [...], "categories": [...], ...}``)."""
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=Vocabulary)
    except msgspec.DecodeError as exc:  # includes ValidationError
        raise ValueError(f"{path}: not a valid vocabulary: {exc}") from exc
