"""Markdown for Dagster metadata: tables and inline PNG images, in one place so every asset's
UI metadata looks the same."""

from __future__ import annotations

import base64


class Markdown(str):
    """Metadata text to show as markdown (a table, an inline picture): domain functions report
    plain values and this, the asset layer turns it into Dagster's markdown value."""


def table(header: list[str], rows: list[list]) -> str:
    """A pipe table; `|` inside cells is escaped so a path or label cannot break a row."""

    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(png: bytes, alt: str = "plot") -> str:
    """An inline PNG (Dagster renders `![alt](data:image/png;base64,...)` in the UI)."""
    return f"![{alt}]({data_uri(png)})"
