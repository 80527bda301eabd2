"""Reading a public interactions file into arrays: MovieLens ``::`` ``.dat``, MovieLens' CSV, or a
generic ``user,item[,rating[,timestamp]]`` CSV (columns named by a header or taken in that order);
and the implicit-feedback split files of NGCF/LightGCN/KGAT-style benchmarks, one line per user.

:func:`detect_format` tells the format from the extension and the first line;
:func:`load_interactions` reads the file with pyarrow's CSV reader and, when a line does not
parse, raises :class:`InteractionFileError` naming the file, line and column. Ids are the file's
own ids; files without timestamps use the row number as the clock. :mod:`dnr.datasets.public` turns
the result into request logs. :func:`load_user_lines` reads one split file (``user item item ...``)
for :mod:`dnr.datasets.public_lines`.
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


# ---------------------------------------------------------------- split files: one line per user


@dataclass(frozen=True)
class Lists:
    """Ragged rows of item ids (CSR): row r is ``items[offsets[r]:offsets[r + 1]]``, in order. A split
    file's lines, and the per-user and per-request lists :mod:`dnr.datasets.public_lines` builds from
    them, with the few vectorised operations it needs (no per-row Python loops)."""

    offsets: np.ndarray  # [R + 1] int64
    items: np.ndarray  # [N] int64

    @classmethod
    def from_rows(cls, row: np.ndarray, items: np.ndarray, rows: int) -> "Lists":
        """From each element's row (ascending) and item."""
        return cls(np.r_[0, np.cumsum(np.bincount(row, minlength=rows))].astype(np.int64), items)

    @classmethod
    def stack(cls, parts: list["Lists"]) -> "Lists":
        """The rows of ``parts`` one after the other."""
        ends = np.cumsum([0] + [p.offsets[-1] for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + e for p, e in zip(parts, ends)])
        return cls(offsets.astype(np.int64), np.concatenate([p.items for p in parts]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self) -> np.ndarray:
        return np.repeat(np.arange(len(self)), self.lengths)

    def rank(self) -> np.ndarray:
        """[N] each element's position within its row."""
        return np.arange(len(self.items)) - np.repeat(self.offsets[:-1], self.lengths)

    def keys(self, width: int) -> np.ndarray:
        return self.row() * width + self.items

    def select(self, keep: np.ndarray) -> "Lists":
        return Lists.from_rows(self.row()[keep], self.items[keep], len(self))

    def take(self, rows: np.ndarray) -> "Lists":
        lengths = self.lengths[rows]
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        at = np.arange(offsets[-1]) + np.repeat(self.offsets[rows] - offsets[:-1], lengths)
        return Lists(offsets, self.items[at])

    def slice(self, lo: int, hi: int) -> "Lists":
        return Lists(self.offsets[lo : hi + 1] - self.offsets[lo], self.items[self.offsets[lo] : self.offsets[hi]])

    def concat(self, other: "Lists") -> "Lists":
        """Row-wise: row r is this row r followed by the other's row r."""
        row = np.r_[self.row(), other.row()]
        order = np.argsort(row, kind="stable")
        return Lists.from_rows(row[order], np.r_[self.items, other.items][order], len(self))

    def tail(self, n: int) -> "Lists":
        return self.select(self.rank() >= np.repeat(self.lengths - n, self.lengths))

    def minus(self, other: "Lists", width: int) -> "Lists":
        """Row-wise set difference, order kept; ``width`` > every item."""
        return self.select(~np.isin(self.keys(width), other.keys(width)))

    def first_occurrences(self, width: int) -> "Lists":
        _, first = np.unique(self.keys(width), return_index=True)
        keep = np.zeros(len(self.items), bool)
        keep[first] = True
        return self.select(keep)

    def random_rank(self, key: np.ndarray) -> np.ndarray:
        """[N] each element's rank within its row when the row is sorted by ``key``."""
        order = np.lexsort((key, self.row()))
        rank = np.empty(len(self.items), np.int64)
        rank[order] = np.arange(len(self.items)) - np.repeat(self.offsets[:-1], self.lengths)
        return rank

    def padded(self, width: int, pad: int, mapping: np.ndarray) -> np.ndarray:
        """[R, width] ``mapping`` of the items (rows at most ``width`` long), -1 and the rest = ``pad``."""
        out = np.full((len(self), width), pad, np.int64)
        mapped = mapping[self.items]
        out[self.row(), self.rank()] = np.where(mapped < 0, pad, mapped)
        return out


@dataclass(frozen=True)
class UserLines:
    """One split file (``user item item ...`` per line), in file order: line r holds user
    ``user[r]`` and the file item ids ``items`` row r (possibly none)."""

    path: Path
    user: np.ndarray  # [U] int64 file user ids, distinct
    items: Lists  # [U] rows of int64 file item ids

    def __len__(self) -> int:
        return len(self.items.items)


def _bad_token(tokens: list[str]) -> str:
    """What is wrong with the first token of a line that is not all non-negative integers."""
    bad = next(t for t in tokens if not (t.isascii() and t.isdigit()))
    if bad[:1] == "-" and bad[1:].isascii() and bad[1:].isdigit():
        return f"{bad!r} is a negative id"
    return f"{bad!r} is not a non-negative integer id"


def load_user_lines(path: str | Path) -> UserLines:
    """Read a split file: whitespace-separated non-negative int ids, the user first; blank lines
    are skipped. Raises InteractionFileError naming the file, the 1-based line and the bad token
    for a token that is not a non-negative integer, an id beyond int64 or a repeated user id."""
    path = Path(path)
    if not path.is_file():
        raise InteractionFileError(f"{path}: no such file")
    users, lengths, items, line_of = [], [], [], {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            joined = "".join(tokens)  # one C-speed check per line instead of one per token
            if not (joined.isascii() and joined.isdigit()):
                raise InteractionFileError(f"{path}, line {lineno}: {_bad_token(tokens)}")
            if max(map(len, tokens)) > 18:  # 18 digits always fit in int64
                big = next((t for t in tokens if int(t) >= 1 << 63), None)
                if big is not None:
                    raise InteractionFileError(f"{path}, line {lineno}: {big!r} does not fit in int64")
            user = int(tokens[0])
            first = line_of.setdefault(user, lineno)
            if first != lineno:
                raise InteractionFileError(f"{path}, line {lineno}: user id {tokens[0]!r} repeats line {first}")
            users.append(user)
            lengths.append(len(tokens) - 1)
            items.extend(map(int, tokens[1:]))
    if not users:
        raise InteractionFileError(f"{path}: no user lines")
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return UserLines(path, np.array(users, np.int64), Lists(offsets, np.array(items, np.int64)))
