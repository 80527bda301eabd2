"""Reading a public interactions file into arrays: MovieLens ``::`` ``.dat``, MovieLens' CSV, or a
generic ``user,item[,rating[,timestamp]]`` CSV (columns named by a header or taken in that order).

:func:`detect_format` tells the format from the extension and the first line;
:func:`load_interactions` reads the file with pyarrow's CSV reader and, when a line does not
parse, raises :class:`InteractionFileError` naming the file, line and column. Ids are the file's
own ids; files without timestamps use the row number as the clock. :mod:`dnr.data.public` turns
the result into request logs.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

FORMATS = ("auto", "movielens-dat", "movielens-csv", "csv")
_MOVIELENS_CSV_HEADER = ["userId", "movieId", "rating", "timestamp"]
#: generic CSV header names (lower-cased) for each role
_ALIASES = {
    "user": {"user", "user_id", "userid"},
    "item": {"item", "item_id", "itemid", "movieid", "movie_id"},
    "rating": {"rating"},
    "timestamp": {"timestamp", "time", "ts"},
}
_ROLES = tuple(_ALIASES)


class InteractionFileError(ValueError):
    """A ratings file that cannot be read; the message names the file, line and column."""


@dataclass(frozen=True)
class Interactions:
    """One row per interaction, in file order. ``rating`` is None for implicit-feedback files;
    ``time`` is Unix seconds, or the row number for files without timestamps."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray | None
    time: np.ndarray
    fmt: str

    def __len__(self) -> int:
        return len(self.user)


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def detect_format(path: str | Path) -> str:
    """``movielens-dat`` for ``::`` files, ``movielens-csv`` for MovieLens' CSV header, else ``csv``."""
    path = Path(path)
    first = _first_line(path)
    if path.suffix == ".dat" or "::" in first:
        return "movielens-dat"
    if first.split(",") == _MOVIELENS_CSV_HEADER:
        return "movielens-csv"
    if path.suffix == ".csv" or "," in first:
        return "csv"
    raise InteractionFileError(f"{path}: cannot tell the format from line 1 {first!r}; pass --format")


def _csv_roles(path: Path, first: str) -> tuple[list[str], bool]:
    """Roles of a generic CSV's columns and whether line 1 is a header."""
    names = [f.strip() for f in first.split(",")]
    if all(_is_number(f) for f in names):
        if not 2 <= len(names) <= 4:
            raise InteractionFileError(
                f"{path}, line 1: {len(names)} columns; expected user,item[,rating[,timestamp]]"
            )
        return list(_ROLES[: len(names)]), False
    roles = []
    for name in names:
        role = next((r for r, names in _ALIASES.items() if name.lower() in names), None)
        if role is None or role in roles:
            raise InteractionFileError(
                f"{path}, line 1: column {name!r} is not one of user, item, rating, timestamp (or is repeated)"
            )
        roles.append(role)
    if "user" not in roles or "item" not in roles:
        raise InteractionFileError(f"{path}, line 1: the header needs a user and an item column, got {names}")
    return roles, True


_PARSERS = {"user": int, "item": int, "rating": float, "timestamp": float}


def _locate_bad_line(path: Path, sep: str, roles: list[str], header: bool) -> str:
    """Slow path, only after the fast reader failed: the first line that does not parse."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if (header and lineno == 1) or not line.strip():
                continue
            values = line.rstrip("\r\n").split(sep)
            if len(values) != len(roles):
                expected = f"{len(roles)} ({sep.join(roles)})"
                return f"line {lineno}: {len(values)} columns, expected {expected}: {line.strip()!r}"
            for role, value in zip(roles, values):
                try:
                    if not math.isfinite(_PARSERS[role](value)):
                        raise ValueError
                except ValueError:
                    return f"line {lineno}, column {role!r}: {value!r} is not a valid {_PARSERS[role].__name__}"
    return "the reader failed on a line the line scan accepts"


def load_interactions(path: str | Path, fmt: str = "auto") -> Interactions:
    """Read a ratings file. Raises InteractionFileError naming the file, line and column."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
    if not path.is_file():
        raise InteractionFileError(f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    first = _first_line(path)
    if fmt == "movielens-dat":
        sep, roles, header = "::", list(_ROLES), False
        # pyarrow's reader takes one-character delimiters only
        source = io.BytesIO(path.read_bytes().replace(b"::", b"\t"))
    else:
        sep, source = ",", path
        if fmt == "movielens-csv":
            if first.split(",") != _MOVIELENS_CSV_HEADER:
                expected = ",".join(_MOVIELENS_CSV_HEADER)
                raise InteractionFileError(f"{path}, line 1: expected header {expected!r}, got {first!r}")
            roles, header = list(_ROLES), True
        else:
            roles, header = _csv_roles(path, first)
    types = {"user": pa.int64(), "item": pa.int64(), "rating": pa.float64(), "timestamp": pa.float64()}
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=roles, skip_rows=int(header)),
            parse_options=pacsv.ParseOptions(delimiter="\t" if sep == "::" else sep),
            convert_options=pacsv.ConvertOptions(column_types={r: types[r] for r in roles}),
        )
        bad = [r for r in roles if table[r].null_count] or [
            r for r in ("rating", "timestamp") if r in roles and not np.isfinite(table[r].to_numpy()).all()
        ]
        if bad:
            raise pa.ArrowInvalid(f"missing or non-finite values in column {bad[0]!r}")
    except pa.ArrowInvalid as err:
        where = _locate_bad_line(path, sep, roles, header)
        raise InteractionFileError(f"{path} ({fmt}), {where}; reader said: {err}") from None
    if table.num_rows == 0:
        raise InteractionFileError(f"{path} ({fmt}): no interactions")
    col = {r: table[r].to_numpy() for r in roles}
    # no timestamps: the file order is the clock, one row = one second
    time = np.floor(col["timestamp"]) if "timestamp" in col else np.arange(table.num_rows)
    return Interactions(
        user=col["user"].astype(np.int64),
        item=col["item"].astype(np.int64),
        rating=col["rating"].astype(np.float32) if "rating" in col else None,
        time=time.astype(np.int64),
        fmt=fmt,
    )
