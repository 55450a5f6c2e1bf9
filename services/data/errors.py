"""One error type for everything the data catalog refuses: ``DataError``.

A bad input file is named with the row (the file's 1-based line number, the header being
line 1) and the column (its header name, or its 1-based position for files without a
header) and what is wrong, e.g.::

    trades.csv: row 7, column Price: not a number: '22x3800'

Parsing errors (``ValueError``, ``msgspec.ValidationError``, ``OSError``...) are wrapped in
it at the place that knows the file, the row and the column, so callers catch one type.
"""
from __future__ import annotations

__all__ = ["DataError"]


class DataError(Exception):
    """A file, option or catalog state the data catalog refuses; ``str()`` is one line."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 column: str | int | None = None) -> None:
        self.file = file
        self.row = row
        self.column = column
        self.reason = message
        where = []
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column}")
        text = message
        if where:
            text = f"{', '.join(where)}: {text}"
        if file is not None:
            text = f"{file}: {text}"
        super().__init__(text)
