"""The root of the config tree, :class:`JobConfig`, and its loading (YAML file, then ``key=value``
overrides, with strict coercion) and serialising (dict, JSON, the printed ``section.key = value``
lines). Import it from :mod:`dnr.config`."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from dnr.config.method import DNRConfig
from dnr.config.sections import (EMBEDDING_OPTIMIZERS, DataConfig, DeGReConfig, GateConfig, ModelConfig,
                                 OptimConfig, TrainConfig)
from dnr.config.validation import ValidationConfig


@dataclass(frozen=True)
class JobConfig:
    """Everything a training job needs; saved with every checkpoint and registry entry."""

    data: DataConfig = field(default_factory=DataConfig)
    """Request-log rows to batches."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The reranker."""
    dnr: DNRConfig = field(default_factory=DNRConfig)
    """DNR objectives and noise generators."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizers."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The Ray Train run."""
    gate: GateConfig = field(default_factory=GateConfig)
    """Offline replay evaluation and promotion."""
    degre: DeGReConfig = field(default_factory=DeGReConfig)
    """DeGRe evaluator, mining and distillation (model.family=degre)."""
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """The held-out slice that selects the registered checkpoint and stops the run."""

    def __post_init__(self):
        # the one check that spans two sections: a fused optimizer the CPU kernels lack
        if not self.train.use_gpu and not EMBEDDING_OPTIMIZERS[self.optim.embedding_optimizer]:
            raise ValueError(
                f"config optim.embedding_optimizer={self.optim.embedding_optimizer!r}: TorchRec has no "
                f"fused {self.optim.embedding_optimizer} for CPU tables (train.use_gpu=false); use one of "
                f"{', '.join(k for k, cpu in EMBEDDING_OPTIMIZERS.items() if cpu)}, or train on GPUs")


# ---- loading: YAML file, then key=value overrides, then one construction per section ----

@functools.cache
def _sections() -> dict[str, type]:
    """Section name -> its dataclass, in JobConfig order."""
    return dict(typing.get_type_hints(JobConfig))


@functools.cache
def _field_types(cls: type) -> dict[str, type]:
    """Field name -> resolved type (annotations are strings under ``from __future__``)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown(what: str, name: str, valid: Sequence[str], where: str) -> ValueError:
    """``where: unknown <what> '<name>' (did you mean ...?); valid: ...`` with a difflib match."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"{where}: unknown {what} {name!r}{hint}; valid: {', '.join(valid)}")


def _lookup(section: str, key: str, where: str) -> type:
    """The type of ``section.key``; ValueError naming ``where`` if either is unknown."""
    sections = _sections()
    if section not in sections:
        raise _unknown("section", section, list(sections), where)
    types = _field_types(sections[section])
    if key not in types:
        raise _unknown(f"key of section {section!r}", key, list(types), where)
    return types[key]


_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def _parse_text(text: str, typ: type, where: str):
    """A command-line string as a value of the field's type (never guessed from the text)."""
    s = text.strip()
    if typ is bool:
        if s.lower() in _TRUE:
            return True
        if s.lower() in _FALSE:
            return False
        raise ValueError(f"{where}: expected a bool (true/false/1/0/yes/no), got {text!r}")
    if typ is int:
        try:
            return int(s)
        except ValueError:
            raise ValueError(f"{where}: expected an integer, got {text!r}") from None
    if typ is float:
        try:
            value = float(s)
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {text!r}")
        return value
    if typ is str:
        return s
    raise TypeError(f"{where}: unsupported config field type {typ!r}")


def _coerce(value, typ: type, where: str):
    """A YAML/JSON value as the field's type: exact types pass, ints widen to float, and strings
    go through ``_parse_text`` (PyYAML reads ``1e-3`` as a string); anything else is an error."""
    if isinstance(value, str) and typ is not str:
        return _parse_text(value, typ, where)
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if type(value) is typ:  # bool is an int subclass: an exact match keeps True out of int fields
        return value
    hint = " (quote it: YAML reads yes/no/on/off as bools)" if typ is str and isinstance(value, bool) else ""
    raise ValueError(f"{where}: expected {typ.__name__}, got {type(value).__name__} {value!r}{hint}")


def _apply_mapping(merged: dict[str, dict], d: Mapping, source: str) -> None:
    """Check ``d`` (section -> key -> value) strictly and merge it into ``merged``."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{source}: expected a mapping of sections, got {type(d).__name__}")
    for section, values in d.items():
        if section not in _sections():
            raise _unknown("section", str(section), list(_sections()), source)
        if values is None:  # an empty section in YAML (``train:``)
            continue
        if not isinstance(values, Mapping):
            raise ValueError(f"{source}: section {section!r} must be a mapping, "
                             f"got {type(values).__name__}")
        for key, value in values.items():
            typ = _lookup(section, str(key), source)
            merged[section][key] = _coerce(value, typ, f"{source}: {section}.{key}")


def _apply_override(merged: dict[str, dict], override: str) -> None:
    where = f"override {override!r}"
    if not isinstance(override, str) or "=" not in override:
        raise ValueError(f"{where}: expected section.key=value, e.g. train.epochs=2")
    dotted, text = override.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{where}: key must be section.key, e.g. train.epochs=2; "
                         f"sections: {', '.join(_sections())}")
    section, key = parts
    typ = _lookup(section, key, where)
    merged[section][key] = _parse_text(text, typ, f"{where} ({section}.{key})")


def _build(merged: Mapping[str, Mapping]) -> JobConfig:
    """One construction per section, so cross-field checks see the final values only."""
    return JobConfig(**{name: cls(**merged.get(name, {})) for name, cls in _sections().items()})


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> JobConfig:
    """Defaults, changed by the YAML file at ``path`` (all sections optional), then by
    ``section.key=value`` overrides (later ones win). An unreadable file, unknown sections/keys
    and malformed values raise ValueError naming the file or the override; validation errors
    (ValueError too) propagate."""
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of 'section.key=value' strings, not one string")
    merged: dict[str, dict] = {name: {} for name in _sections()}
    if path is not None:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as err:  # a ValueError like every other config error: jobs print it as one line
            raise ValueError(f"config file {os.fspath(path)}: {err.strerror}") from err
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"config file {os.fspath(path)}: not valid YAML: {err}") from err
        _apply_mapping(merged, {} if doc is None else doc, f"config file {os.fspath(path)}")
    for override in overrides:
        _apply_override(merged, override)
    return _build(merged)


def config_to_dict(cfg: JobConfig) -> dict:
    """Plain nested dict: section -> key -> int | float | bool | str."""
    return dataclasses.asdict(cfg)


def config_from_dict(d: Mapping) -> JobConfig:
    """Inverse of ``config_to_dict``. Strict: an unknown section or key is a ValueError naming
    it; missing sections and keys take their defaults."""
    merged: dict[str, dict] = {name: {} for name in _sections()}
    _apply_mapping(merged, d, "config dict")
    return _build(merged)


def config_to_json(cfg: JobConfig) -> str:
    """Stable JSON (sorted keys) of the resolved config: what checkpoints and the registry store."""
    return json.dumps(config_to_dict(cfg), sort_keys=True, indent=2)


def _format_value(value) -> str:
    """As an override would spell it, so a printed line can be pasted back as ``key=value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def describe_config(cfg: JobConfig) -> str:
    """The resolved config as aligned ``section.key = value`` lines, in declaration order."""
    rows = [(f"{section}.{key}", _format_value(value))
            for section, values in config_to_dict(cfg).items() for key, value in values.items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}} = {value}" for name, value in rows)
