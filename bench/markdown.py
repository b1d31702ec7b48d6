"""Markdown tables, written one way for every benchmark's printout and every generated section of the docs."""

from __future__ import annotations

from typing import Iterable, Sequence

__all__ = ["table"]


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """The lines of a markdown table. ``align``: one letter per column, ``l`` (left, the default for columns it does
    not reach) or ``r`` (right: figures). A cell is written with ``str``; format figures before."""
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align.ljust(len(header), "l")) + "|"
    return [_row(header), rule, *(_row(row) for row in rows)]


def _row(cells: Sequence[object]) -> str:
    return "|" + "|".join(f" {cell} " if str(cell) else " " for cell in cells) + "|"
