"""Entities: the keys features hang on."""

from feast import Entity, ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A known (identified) customer. Anonymous visitors have no features.",
)

offer = Entity(
    name="offer",
    join_keys=["offer_id"],
    value_type=ValueType.STRING,
    description="An offer of the catalogue.",
)
