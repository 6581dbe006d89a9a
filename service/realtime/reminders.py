"""Reminders of the open cart (``context.remind: cart``; the abandoned-cart sequence): which
offers may be sent, and what each reminds of. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from service.domain.decision import Offer

__all__ = ["Reminder", "cart_reminders"]


@dataclass(frozen=True, slots=True)
class Reminder:
    kind: str  # item: the offer is the carted item | category: an offer of its category
    item_id: str  # the carted item
    category: str


def cart_reminders(
    cart: Iterable[str], categories: Mapping[str, str], offers: Mapping[str, Offer]
) -> dict[str, Reminder]:
    """Offer id -> what sending it reminds of.

    Every carted item that is an offer reminds of itself. A carted item that is not an offer
    (a product outside the catalogue) reminds of its category, named by its ``cart_add``
    event (``categories``): the offers of that category. An item that is neither adds
    nothing: a reminder is of what was left in the cart, not of something else.
    """
    items = list(dict.fromkeys(cart))
    out: dict[str, Reminder] = {
        i: Reminder("item", i, offers[i].category) for i in items if i in offers
    }
    for item in items:
        cat = categories.get(item)
        if item in offers or cat is None:
            continue
        for o in offers.values():
            if o.category == cat and o.offer_id not in out:
                out[o.offer_id] = Reminder("category", item, cat)
    return out
