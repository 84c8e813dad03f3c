"""Plain-text tables for a terminal, and strings made safe to print there.

Text that users supplied (usernames, a job's error) is printed to an operator's
terminal: a control character in it could move the cursor, retitle the window or
hide a line, so every cell goes through `printable` first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def printable(text: str) -> str:
    """`text` with each character a terminal would act on (escapes, bidi overrides,
    line breaks) written as a visible escape, `\\x1b` for ESC."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def table(headers: Sequence[str] | None, rows: Iterable[Sequence]) -> str:
    """Columns padded to their widest cell, two spaces apart; a column of numbers
    is aligned right. No header line when `headers` is None."""
    rows = [list(row) for row in rows]
    width = len(headers) if headers else len(rows[0]) if rows else 0
    numeric = [bool(rows) and all(isinstance(row[i], int | float) for row in rows)
               for i in range(width)]
    cells = ([list(headers)] if headers else []) + [[printable(str(c)) for c in row]
                                                    for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(width)]
    return "\n".join(
        "  ".join(cell.rjust(w) if right else cell.ljust(w)
                  for cell, w, right in zip(row, widths, numeric)).rstrip()
        for row in cells)


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."
