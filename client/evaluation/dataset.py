"""Read (query, document, label) rows from JSONL, CSV or TSV and group them by query.

Column names (JSONL keys or the CSV/TSV header row) may be any of the aliases in ``COLUMNS``; other
columns are ignored. Every malformed row raises ``DatasetError`` naming the file and the line.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# Accepted names for each column, the first one being the canonical name used in messages.
COLUMNS: dict[str, tuple[str, ...]] = {
    "query": ("query", "question", "q"),
    "document": ("document", "passage", "doc", "text", "context"),
    "label": ("label", "relevance", "rel"),
}
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}


class DatasetError(ValueError):
    """A data file that cannot be evaluated; ``line`` is 1-based (0 when it concerns the whole file)."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line else str(self.path)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Row:
    """One labelled (query, document) pair and the line it was read from."""

    query: str
    document: str
    label: float
    line: int


@dataclass(frozen=True)
class QueryGroup:
    """All the rows of one query, in file order; ``line`` is where its first row is."""

    query: str
    documents: tuple[str, ...]
    labels: tuple[float, ...]
    line: int


def load_dataset(path: Path | str, file_format: str | None = None) -> list[QueryGroup]:
    """Read a data file and group its rows by query (groups in order of first appearance).

    ``file_format`` is ``jsonl``, ``csv`` or ``tsv``; by default it follows the file's extension."""
    return group_rows(read_rows(path, file_format))


def read_rows(path: Path | str, file_format: str | None = None) -> list[Row]:
    """Every row of the file, validated; raises DatasetError on the first bad line or an empty file."""
    path = Path(path)
    fmt = file_format or FORMATS.get(path.suffix.lower())
    if fmt not in ("jsonl", "csv", "tsv"):
        raise DatasetError(path, 0, f"unknown format {path.suffix!r}: use .jsonl, .csv or .tsv (or pass the format)")
    if not path.is_file():
        raise DatasetError(path, 0, "no such file")
    with path.open(encoding="utf-8-sig", newline="") as f:
        records = _jsonl_records(path, f) if fmt == "jsonl" else _delimited_records(path, f, fmt)
        rows = [_row(path, line, record) for line, record in records]
    if not rows:
        raise DatasetError(path, 0, "the file has no rows (query, document, label)")
    return rows


def group_rows(rows: list[Row]) -> list[QueryGroup]:
    """Group rows by exact query text, keeping file order inside each group."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.query, []).append(row)
    return [
        QueryGroup(query, tuple(r.document for r in members), tuple(r.label for r in members), members[0].line)
        for query, members in groups.items()
    ]


def _jsonl_records(path: Path, lines) -> Iterator[tuple[int, Mapping]]:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue  # blank lines (a trailing newline, spacing) carry no row
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(path, number, f"not valid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            got = text.strip()[:60]
            raise DatasetError(path, number, f"expected a JSON object with query, document and label, got {got!r}")
        yield number, record


def _delimited_records(path: Path, f, fmt: str) -> Iterator[tuple[int, Mapping]]:
    # Passages can be long; the csv module's default cap (128 KiB a field) would reject them.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(f, delimiter="," if fmt == "csv" else "\t")
    header = next(reader, None)
    if header is None:
        return
    header = [name.strip() for name in header]
    _resolve_columns(path, reader.line_num, header)  # a bad header is reported at its line, before any row
    end = reader.line_num
    for fields in reader:
        # A quoted field may span lines: name the line where the record starts.
        start, end = end + 1, reader.line_num
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            raise DatasetError(path, start, f"expected {len(header)} fields as in the header, got {len(fields)}")
        yield start, dict(zip(header, fields))


def _resolve_columns(path: Path, line: int, names: list[str] | Mapping) -> dict[str, str]:
    """Map each canonical column to the name used in the file."""
    lowered = {str(name).lower(): name for name in names}
    found: dict[str, str] = {}
    for column, aliases in COLUMNS.items():
        match = next((lowered[a] for a in aliases if a in lowered), None)
        if match is None:
            present = ", ".join(map(str, names)) or "none"
            raise DatasetError(
                path, line, f"missing column {column!r} (accepted names: {', '.join(aliases)}; found: {present})"
            )
        found[column] = match
    return found


def _row(path: Path, line: int, record: Mapping) -> Row:
    columns = _resolve_columns(path, line, list(record))
    query, document = record[columns["query"]], record[columns["document"]]
    for column, value in (("query", query), ("document", document)):
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(path, line, f"{column} must be non-empty text, got {value!r}"[:200])
    return Row(query.strip(), document, _label(path, line, record[columns["label"]]), line)


def _label(path: Path, line: int, value: object) -> float:
    """A finite, non-negative number: 0/1 binary or graded (0, 1, 2, ...); numeric strings are accepted."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise DatasetError(path, line, f"label must be a number (0/1 or a graded 0, 1, 2, ...), got {value!r}")
    if number < 0:
        raise DatasetError(path, line, f"label must not be negative, got {value!r}")
    return number
