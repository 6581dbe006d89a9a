"""The documentation stays true to the code: every setting is documented, every route is in the
API page, the README stays a short guide. (`make docs` builds the site with --strict.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_BYTES = 12 * 1024


def settings_tables() -> set[str]:
    """Every variable declared in contracts/settings.py (the one place settings are read)."""
    from contracts.settings import VARIABLES

    return {v.name for v in VARIABLES}


class TestConfiguration:
    def test_every_documented_setting_is_on_the_configuration_page(self) -> None:
        page = (DOCS / "configuration.md").read_text()
        names = settings_tables()
        assert len(names) >= 30, names  # the tables were found
        missing = sorted(n for n in names if f"`{n}`" not in page)
        assert not missing, f"docs/configuration.md lacks {missing}"

    def test_every_variable_of_env_example_is_on_the_configuration_page(self) -> None:
        listed = set(re.findall(r"^#? ?([A-Z][A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
        page = (DOCS / "configuration.md").read_text()
        assert len(listed) >= 20, listed
        assert not sorted(n for n in listed if f"`{n}`" not in page)


class TestApiPage:
    def test_every_route_is_documented(self) -> None:
        from service.app import create_app
        from tests.support import make_settings

        app = create_app(make_settings(NEXTBEST_DEV_MODE=1))
        page = (DOCS / "api.md").read_text()
        routes = {
            (method, route.path)
            for route in app.routes
            for method in getattr(route, "methods", ())
            if method not in ("HEAD", "OPTIONS") and not route.path.startswith("/schema/")
        }
        assert ("POST", "/decide") in routes
        missing = sorted(f"{m} {p}" for m, p in routes if f"`{m} {p}`" not in page)
        assert not missing, f"docs/api.md lacks {missing}"

    def test_every_error_code_is_in_the_error_table(self) -> None:
        """The `error` codes the service's handlers emit (wherever the mapping lives)."""
        code = "\n".join(f.read_text() for f in sorted((ROOT / "service").rglob("*.py")))
        codes = set(re.findall(r'_error\(\s*[^,()]+,\s*"([a-z_]+)"', code))
        codes |= set(re.findall(r'\b\d{3}: "([a-z_]+)"', code))
        codes |= set(re.findall(r'\.get\(\s*exc\.status_code,\s*"([a-z_]+)"', code))
        assert {"invalid_request", "unprocessable_request", "unavailable"} <= codes, codes
        page = (DOCS / "api.md").read_text()
        table = page[page.index("## Errors") :]
        missing = sorted(c for c in codes if f"`{c}`" not in table)
        assert not missing, f"the error table in docs/api.md lacks {missing}"


class TestReadme:
    def test_is_a_short_guide(self) -> None:
        text = (ROOT / "README.md").read_text()
        assert len(text.encode()) <= README_MAX_BYTES
        assert "```mermaid" in text  # the picture
        assert "make demo" in text and "make test" in text  # the two commands
        assert "curl" in text and '"decision_id"' in text  # one request and its response

    def test_links_into_the_docs_resolve(self) -> None:
        text = (ROOT / "README.md").read_text()
        links = re.findall(r"\]\((docs/[^)#]+)", text)
        assert links
        for link in links:
            assert (ROOT / link).is_file(), link


class TestFigures:
    def test_every_figure_is_shown_and_every_shown_figure_exists(self) -> None:
        """docs/figures/ holds only plots a page shows, each written by a command the page names."""
        pages = {p: p.read_text() for p in DOCS.glob("*.md")}
        shown = {
            (p, m) for p, text in pages.items() for m in re.findall(r"\]\((figures/[^)]+)\)", text)
        }
        for page, ref in shown:
            assert (DOCS / ref).is_file(), f"{page.name} shows {ref}, which does not exist"
            assert f"docs/{ref}" in pages[page] or "figures --out" in pages[page], (
                f"{page.name} shows {ref} without the command that writes it"
            )
        on_disk = {f"figures/{f.name}" for f in (DOCS / "figures").glob("*.png")}
        assert not on_disk - {ref for _, ref in shown}, "figures no page shows"
