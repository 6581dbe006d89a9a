"""The decision log as Arrow / Parquet tables, derived from the record structs: one schema.

:class:`contracts.records.DecisionRecord` and :class:`contracts.records.FeedbackRecord` are
the log's definition. :class:`LogTable` walks a struct's fields once (``msgspec.inspect``)
and derives both the Arrow schema and the converters in each direction, so the exporter
(:mod:`service.exporter`) writes and the offline readers
(:mod:`training.measurement.decision_log`) read the same columns without a second list of
them. Mapping:

| record field | Arrow |
|---|---|
| ``str``, ``Literal[...]`` | string |
| ``bool`` / ``int`` / ``float`` | bool / int64 / float64 |
| ``X | None`` | X, nullable |
| ``list[X]`` | list<X> |
| tuple of strings (``suppressed``) | list<string> |
| nested record (``action``, ``candidates``, ...) | struct<...> (every field, defaults filled in) |
| ``dict[...]``, ``Any`` | string: the value as JSON (``model_versions``, ``realtime``, ``hours``) |

Every row also carries where it came from, first in the table: ``shard`` (the log shard,
0-15), ``stream_id`` (the Redis stream entry id, unique within its shard) and ``logged_at``
(when Redis appended it: the entry id's milliseconds). The exporter partitions the files by
``logged_at`` (``date=YYYY-MM-DD/hour=HH``); ``ts`` stays the record's own time (the
decision's ``now``, which a replay or a simulation may set anywhere).

Imports pyarrow: only the exporter and the offline tools use this module (not the service).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import msgspec.inspect as mi
import pyarrow as pa

from contracts.records import DecisionRecord, FeedbackRecord

__all__ = ["DECISIONS", "FEEDBACK", "META_FIELDS", "LogTable", "Origin"]

S = TypeVar("S", bound=msgspec.Struct)
Codec = tuple[Any, Callable[[Any], Any], Callable[[Any], Any]]  # (arrow type, encode, decode)

#: where a row came from (first columns of every log file)
META_FIELDS: tuple[tuple[str, Any], ...] = (
    ("shard", pa.int16()),
    ("stream_id", pa.string()),
    ("logged_at", pa.timestamp("ms", tz="UTC")),
)


@dataclass(frozen=True, slots=True)
class Origin:
    """A stream entry's place: its shard, id (``<ms>-<seq>``) and append time (ms)."""

    shard: int
    stream_id: str

    @property
    def ms(self) -> int:
        return int(self.stream_id.split("-", 1)[0])


def _same(v: Any) -> Any:
    return v


def _json_codec() -> Codec:
    enc = msgspec.json.Encoder()

    def encode(v: Any) -> Any:
        return None if v is None else enc.encode(v).decode()

    def decode(v: Any) -> Any:
        return None if v is None else msgspec.json.decode(v)

    return pa.string(), encode, decode


def _list_codec(item: Codec) -> Codec:
    typ, enc, dec = item

    def encode(v: Any) -> Any:
        return None if v is None else [enc(x) for x in v]

    def decode(v: Any) -> Any:
        return None if v is None else [dec(x) for x in v]

    return pa.list_(typ), encode, decode


def _struct_codec(t: mi.StructType) -> Codec:
    fields = [(f.name, f.encode_name, _codec(f.type)) for f in t.fields]
    arrow = pa.struct([pa.field(enc_name, c[0]) for _, enc_name, c in fields])

    def encode(v: Any) -> Any:
        if v is None:
            return None
        return {enc_name: c[1](getattr(v, name)) for name, enc_name, c in fields}

    def decode(v: Any) -> Any:
        if v is None:
            return None
        return {enc_name: c[2](v.get(enc_name)) for _, enc_name, c in fields}

    return arrow, encode, decode


_SCALARS: dict[type[mi.Type], Any] = {
    mi.StrType: pa.string(),
    mi.BoolType: pa.bool_(),
    mi.IntType: pa.int64(),
    mi.FloatType: pa.float64(),
}


def _is_str(t: mi.Type) -> bool:
    if isinstance(t, mi.UnionType):
        return all(isinstance(x, mi.NoneType) or _is_str(x) for x in t.types)
    if isinstance(t, mi.LiteralType):
        return all(isinstance(x, str) for x in t.values)
    return isinstance(t, mi.StrType)


def _codec(t: mi.Type) -> Codec:
    if isinstance(t, mi.UnionType):
        present = [x for x in t.types if not isinstance(x, mi.NoneType)]
        return _codec(present[0]) if len(present) == 1 else _json_codec()
    for kind, arrow in _SCALARS.items():
        if isinstance(t, kind):
            return arrow, _same, _same
    if _is_str(t):
        return pa.string(), _same, _same
    if isinstance(t, mi.ListType):
        return _list_codec(_codec(t.item_type))
    if isinstance(t, mi.TupleType) and all(_is_str(x) for x in t.item_types):
        return _list_codec((pa.string(), _same, _same))
    if isinstance(t, mi.StructType):
        return _struct_codec(t)
    return _json_codec()  # dicts, Any, anything else: JSON text, decoded back on read


class LogTable(Generic[S]):
    """The Arrow schema of one record type and the conversions both ways."""

    def __init__(self, record: type[S], name: str) -> None:
        info = mi.type_info(record)
        assert isinstance(info, mi.StructType)
        self.record = record
        self.name = name  # folder under the log root: ``decisions`` / ``feedback``
        self._fields = [(f.name, f.encode_name, _codec(f.type)) for f in info.fields]
        self.schema = pa.schema(
            [pa.field(n, t) for n, t in META_FIELDS]
            + [pa.field(enc_name, c[0]) for _, enc_name, c in self._fields]
        )
        self.columns: tuple[str, ...] = tuple(self.schema.names)

    def table(self, rows: Sequence[tuple[Origin, S]]) -> Any:
        """(origin, record) pairs -> an Arrow table of :attr:`schema`."""
        cols: dict[str, list[Any]] = {
            "shard": [o.shard for o, _ in rows],
            "stream_id": [o.stream_id for o, _ in rows],
            "logged_at": [o.ms for o, _ in rows],
        }
        for name, enc_name, (_, encode, _) in self._fields:
            cols[enc_name] = [encode(getattr(r, name)) for _, r in rows]
        return pa.Table.from_pydict(cols, schema=self.schema)

    def records(self, table: Any) -> list[S]:
        """An Arrow table (or record batch) with the record columns -> the records."""
        present = set(table.column_names)
        fields = [f for f in self._fields if f[1] in present]
        data = {f[1]: table.column(f[1]).to_pylist() for f in fields}
        out: list[S] = []
        for i in range(table.num_rows):
            row = {}
            for _, enc_name, (_, _, decode) in fields:
                v = decode(data[enc_name][i])
                if v is not None:
                    row[enc_name] = v
            out.append(msgspec.convert(row, self.record))
        return out

    def origins(self, table: Any) -> Iterable[tuple[int, str]]:
        return zip(
            table.column("shard").to_pylist(), table.column("stream_id").to_pylist(), strict=True
        )


DECISIONS: LogTable[DecisionRecord] = LogTable(DecisionRecord, "decisions")
FEEDBACK: LogTable[FeedbackRecord] = LogTable(FeedbackRecord, "feedback")
