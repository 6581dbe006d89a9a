"""The input contract's page documents every table and column the code enforces."""

from __future__ import annotations

from pathlib import Path

from contracts.tables import EVENT_TYPES, TABLES

PAGE = Path(__file__).resolve().parents[2] / "docs" / "your-data.md"


def test_every_contract_column_and_event_type_is_documented() -> None:
    page = PAGE.read_text()
    for table in TABLES:
        assert f"### {table.name}" in page, table.name
        for col in table.columns:
            assert f"`{col.name}`" in page, (table.name, col.name)
    for t in EVENT_TYPES:
        assert f"`{t}`" in page, t
    assert "`consent_<channel>`" in page
