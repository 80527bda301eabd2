"""Table schemas: ``dnr/schema_files/*.json`` (Delta schema JSON) is the single source of truth.

Every column name the code uses comes from here::

    from dnr.schemas import REQUEST_LOGS as RL
    table[RL.col.retriever_scores]      # AttributeError if the schema has no such column

The JSON files are package data of ``dnr`` (``[tool.setuptools.package-data]`` in pyproject.toml),
read through :mod:`importlib.resources`: an editable install reads them from the checkout, a wheel
from wherever it was installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

SCHEMA_DIR: Traversable = resources.files("dnr") / "schema_files"
"""The folder of the schema JSON files inside the installed package."""


def _schema_path(name: str) -> Traversable:
    path = SCHEMA_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no schema named {name!r} in {SCHEMA_DIR}")
    return path


class _Columns:
    """Attribute access to column names that fails loudly on a name the schema lacks."""

    def __init__(self, table: str, names: list[str]):
        self._table = table
        self._names = frozenset(names)

    def __getattr__(self, name: str) -> str:
        if name.startswith("_") or name not in self._names:
            raise AttributeError(f"table {self._table!r} has no column {name!r}")
        return name


@dataclass(frozen=True)
class TableSchema:
    """One table of the lake: its name, its Delta schema JSON and derived views."""

    name: str

    @cached_property
    def delta_json(self) -> dict:
        return json.loads(_schema_path(self.name).read_text(encoding="utf-8"))

    @cached_property
    def arrow(self) -> pa.Schema:
        """The pyarrow schema (deltalake 1.x returns arro3; we convert via the C data interface)."""
        from deltalake import Schema

        return pa.schema(Schema.from_json(json.dumps(self.delta_json)).to_arrow())

    @cached_property
    def delta(self):
        from deltalake import Schema

        return Schema.from_json(json.dumps(self.delta_json))

    @property
    def names(self) -> list[str]:
        return [f["name"] for f in self.delta_json["fields"]]

    @property
    def required(self) -> list[str]:
        """Columns declared not-null."""
        return [f["name"] for f in self.delta_json["fields"] if not f["nullable"]]

    @cached_property
    def col(self) -> _Columns:
        return _Columns(self.name, self.names)

    def empty_table(self) -> pa.Table:
        return self.arrow.empty_table()


REQUEST_LOGS = TableSchema("request_logs")
QUARANTINE = TableSchema("quarantine")
MODEL_REGISTRY = TableSchema("model_registry")
REPLAY_REPORTS = TableSchema("replay_reports")

ALL_TABLES = (REQUEST_LOGS, QUARANTINE, MODEL_REGISTRY, REPLAY_REPORTS)

#: partition column of request_logs
PARTITION_COLUMN = REQUEST_LOGS.col.ds
