"""Read Feast's own Redis layout directly: one HMGET per customer, no SDK on the hot path.

Feast's Redis online store keeps one hash per entity key; its name is the serialized entity
key (``entity_key_serialization_version`` 3) followed by the project name, and each field is
``murmur3_32("<feature view>:<feature>")`` holding a serialized ``feast.types.Value``, plus
``_ts:<feature view>`` holding a ``google.protobuf.Timestamp``. A parity test proves the
values read here equal ``FeatureStore.get_online_features`` for the same customers.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

import mmh3
import numpy as np
import numpy.typing as npt

__all__ = ["FeastRedisLayout", "canary_problems"]

F64 = npt.NDArray[np.float64]
_STRING = 2  # feast ValueType.STRING


def entity_key(join_key: str, value: str, project: str) -> bytes:
    """Feast's Redis key for a single string join key (serialization version 3)."""
    k = join_key.encode()
    v = value.encode()
    return b"".join(
        (
            struct.pack("<I", 1),
            struct.pack("<I", _STRING),
            struct.pack("<I", len(k)),
            k,
            struct.pack("<I", _STRING),
            struct.pack("<I", len(v)),
            v,
            project.encode(),
        )
    )


def field_hash(view: str, feature: str) -> bytes:
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def decode_value(buf: bytes | None) -> float:
    """A serialized ``feast.types.Value`` holding a scalar number -> float (NaN if unset).

    Handles the numeric oneofs (int32 3, int64 4, double 5, float 6, bool 7) directly; any
    other content (e.g. null_val) is missing.
    """
    if not buf:
        return math.nan
    tag = buf[0]
    if tag == 0x35:  # float_val, fixed32
        return float(struct.unpack_from("<f", buf, 1)[0])
    if tag in (0x20, 0x18):  # int64_val / int32_val, varint (two's complement)
        v, _ = _varint(buf, 1)
        if v >= 1 << 63:
            v -= 1 << 64
        return float(v)
    if tag == 0x29:  # double_val, fixed64
        return float(struct.unpack_from("<d", buf, 1)[0])
    if tag == 0x38:  # bool_val
        v, _ = _varint(buf, 1)
        return float(v)
    return math.nan


def decode_timestamp(buf: bytes | None) -> float | None:
    if not buf:
        return None
    seconds = nanos = 0
    i = 0
    while i < len(buf):
        tag = buf[i]
        v, i = _varint(buf, i + 1)
        if tag == 0x08:
            seconds = v
        elif tag == 0x10:
            nanos = v
    return seconds + nanos / 1e9


class FeastRedisLayout:
    """Precomputed field list for a set of feature views; decodes one HMGET reply."""

    def __init__(
        self,
        views: Mapping[str, Sequence[str]],
        project: str = "nextbest",
        join_key: str = "customer_id",
    ) -> None:
        self.project = project
        self.join_key = join_key
        self.names: list[str] = []
        self.fields: list[bytes] = []
        self.ts_fields: list[bytes] = []
        for view, features in views.items():
            for f in features:
                self.names.append(f)
                self.fields.append(field_hash(view, f))
        self.views: list[str] = list(views)
        for view in views:
            self.ts_fields.append(f"_ts:{view}".encode())
        self.all_fields = [*self.fields, *self.ts_fields]

    def key(self, customer_id: str) -> bytes:
        return entity_key(self.join_key, customer_id, self.project)

    def decode(
        self, reply: Sequence[bytes | None]
    ) -> tuple[dict[str, F64] | None, dict[str, float]]:
        """(features as length-1 arrays, feature view -> timestamp of its row) or (None, {}).

        Each view has its own timestamp: the profile view's row is written once (its
        timestamp is the sign-up), the behaviour and engagement snapshots are rewritten at
        every materialization; how old each may be is the view's TTL
        (:func:`service.features.freshness.drop_stale`).
        """
        n = len(self.fields)
        stamps = {
            view: ts
            for view, raw in zip(self.views, reply[n:], strict=True)
            if (ts := decode_timestamp(raw)) is not None
        }
        if not stamps:
            return None, {}
        # one array, one length-1 view per feature (a view is cheaper than an array each)
        row = np.array([decode_value(b) for b in reply[:n]], dtype=np.float64)
        values = {name: row[i : i + 1] for i, name in enumerate(self.names)}
        return values, stamps


def canary_problems(
    values: Mapping[str, F64] | None, expected: Mapping[str, Mapping[str, float]]
) -> list[str] | None:
    """Differences between the layout canary as decoded here and the values Feast wrote
    (:func:`contracts.feast_repo.canary_values`); None when no canary was written."""
    if values is None:
        return None
    problems = []
    for view, row in expected.items():
        for name, want in row.items():
            got = float(values[name][0]) if name in values else math.nan
            if math.isnan(got) or got != want:
                problems.append(f"{view}:{name} decoded as {got!r}, Feast wrote {want!r}")
    return problems
