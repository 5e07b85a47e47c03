"""The one table writer: aligned text for terminals and GitHub Markdown for reports.

Every report (bench, export, training summary, the CLI's human output) and every bench script
builds rows as dicts and names its columns as ``[(key, header), ...]``; a missing or ``None``
cell prints as empty. Pure Python, TF-free.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

Columns = Sequence[tuple[str, str]]


def _cells(rows: Iterable[Mapping[str, Any]], columns: Columns) -> list[list[str]]:
    return [["" if r.get(k) is None else str(r.get(k)) for k, _ in columns] for r in rows]


def _numeric(s: str) -> bool:
    for ch in ".-+%,x":
        s = s.replace(ch, "")
    return s.isdigit()


def text_table(rows: Iterable[Mapping[str, Any]], columns: Columns) -> str:
    """A plain aligned table with a dashed rule under the header; numbers right-aligned."""
    cells = [[h for _, h in columns], *_cells(rows, columns)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w)
                               for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Columns,
                   right: Collection[str] = ()) -> str:
    """A GitHub Markdown table (``|`` inside a cell is escaped); the columns whose keys are
    in ``right`` are right-aligned."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for _, h in columns) + " |",
             "|" + "|".join("---:" if k in right else "---" for k, _ in columns) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in _cells(rows, columns)]
    return "\n".join(lines)
