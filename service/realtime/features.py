"""The `customer_realtime` feature view, written directly in Feast's Redis layout.

The service computes real-time features from events (see :mod:`service.realtime.state`) and
writes one row per customer into the same Redis hash Feast uses for the customer (key =
serialized entity key + project; field = ``murmur3("customer_realtime:<feature>")`` holding
a serialized ``feast.types.Value``; ``_ts:customer_realtime`` holding a protobuf
``Timestamp``; plus the join key as Feast's push writes it). A test writes the same row with
``FeatureStore.push`` and proves the hashes byte-identical and ``get_online_features`` equal.

Like Feast's Redis store, a row whose timestamp is not newer than the stored one is skipped;
the check and the write are one Lua script, so concurrent writers cannot go backwards.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from contracts.features import REALTIME
from service.adapters.feast_redis import entity_key, field_hash

__all__ = [
    "FeastRowWriter",
    "encode_float32",
    "encode_int64",
    "encode_string",
    "encode_timestamp",
]


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_int64(v: int) -> bytes:
    """``Value(int64_val=v).SerializeToString()`` (oneof: written even when 0)."""
    return b"\x20" + _varint(int(v))


def encode_float32(v: float) -> bytes:
    """``Value(float_val=v).SerializeToString()``."""
    return b"\x35" + struct.pack("<f", v)


def encode_string(v: str) -> bytes:
    raw = v.encode()
    return b"\x12" + _varint(len(raw)) + raw


def encode_timestamp(micros: int) -> bytes:
    """``google.protobuf.Timestamp`` from epoch microseconds (zero fields omitted)."""
    seconds, rem = divmod(micros, 1_000_000)
    out = b""
    if seconds:
        out += b"\x08" + _varint(seconds)
    if rem:
        out += b"\x10" + _varint(rem * 1000)
    return out


# KEYS[1] Feast entity hash. ARGV: ts field, new ts (epoch microseconds), ts bytes, then
# (field, value) pairs. Writes only when newer than the stored row (Feast's rule: skip older
# or equal). Returns 1 written, 0 skipped.
WRITE_LUA = """
local function varint(s, i)
  local result, mult = 0, 1
  while true do
    local b = string.byte(s, i)
    i = i + 1
    result = result + (b % 128) * mult
    if b < 128 then return result, i end
    mult = mult * 128
  end
end
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if prev then
  local sec, nanos, i = 0, 0, 1
  while i <= #prev do
    local tag = string.byte(prev, i)
    local v
    v, i = varint(prev, i + 1)
    if tag == 8 then sec = v elseif tag == 16 then nanos = v end
  end
  if sec * 1000000 + math.floor(nanos / 1000) >= tonumber(ARGV[2]) then return 0 end
end
local args = {ARGV[1], ARGV[3]}
for j = 4, #ARGV do args[#args + 1] = ARGV[j] end
redis.call('HSET', KEYS[1], unpack(args))
return 1
"""


class FeastRowWriter:
    """Writes `customer_realtime` rows in Feast's layout (one Lua call per row)."""

    def __init__(self, client: Any, project: str = "nextbest", join_key: str = "customer_id"):
        self.project = project
        self.join_key = join_key
        self._script = client.register_script(WRITE_LUA)
        self._ts_field = f"_ts:{REALTIME.name}".encode()
        self._fields = {f.name: field_hash(REALTIME.name, f.name) for f in REALTIME.features}
        self._float = frozenset(f.name for f in REALTIME.features if f.dtype == "float32")
        self._join_field = field_hash(REALTIME.name, join_key)

    def key(self, entity: str) -> bytes:
        return entity_key(self.join_key, entity, self.project)

    def row_args(self, entity: str, values: Mapping[str, float], ts_micros: int) -> list[bytes]:
        args = [self._ts_field, str(ts_micros).encode(), encode_timestamp(ts_micros)]
        args += [self._join_field, encode_string(entity)]
        for name, fh in self._fields.items():
            v = values.get(name, 0)
            args += [fh, encode_float32(v) if name in self._float else encode_int64(int(v))]
        return args

    async def write(
        self, entity: str, values: Mapping[str, float], ts_micros: int, client: Any = None
    ) -> bool:
        """Write the row unless a newer one is stored; True when written."""
        out = await self._script(
            keys=[self.key(entity)], args=self.row_args(entity, values, ts_micros), client=client
        )
        return bool(out)
