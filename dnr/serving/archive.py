"""Check a ``.pt2`` archive before ``torch.export.load`` sees it.

``torch.export.load`` (torch 2.13, ``torch/export/pt2_archive/_package.py`` and
``torch/_export/serde/serialize.py``) is not safe on untrusted files, and says so:

* it unpickles: tensors whose payload config says ``use_pickle`` (``torch.load(weights_only=False)``),
  ``custom_obj_*`` (TorchScript pickler) and ``opaque_obj_*`` (``pickle.loads``) constants, legacy
  ``<model>.pt`` weight files, and the example inputs (``weights_only=True`` first, then a silent
  fallback to ``weights_only=False``); an archive it cannot read as pt2 goes to a legacy zip path
  with the same fallback;
* it evaluates: every symbolic expression is parsed with ``sympy.sympify`` (Python ``eval``),
  ``guards_code`` strings are compiled into the module's input check (``exec``), and node targets
  resolve any ``torch.*`` attribute path (``torch.os.system`` is one);
* it loads native code: AOTInductor ``.so`` files in ``data/aotinductor/``.

:func:`check_archive` therefore accepts only what :func:`dnr.serving.export.export_reranker`
writes and refuses everything else, naming it: a fixed set of entries, raw (non-pickled) tensor
payloads, empty example inputs, aten operators only, and symbolic expressions and guards made of
a small token grammar (symbol names, integers, arithmetic, a few sympy constructors) that cannot
reach a Python object. It runs on the bytes that are then loaded (no re-read in between).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Iterator

import torch

from dnr.serving.artifact_format import INPUT_NAMES


class ArtifactError(ValueError):
    """A serving artifact that must not be loaded: tampered, unknown format or unsafe content."""


_ENTRIES = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+)"
)
"""Entries below the archive's root folder; anything else (aotinductor, custom or opaque objects,
legacy pickled weights, extra files) is refused."""
_PAYLOADS = {"data/weights/model_weights_config.json": re.compile(r"weight_\d+"),
             "data/constants/model_constants_config.json": re.compile(r"tensor_\d+")}

_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+")
_STR_ARGS = frozenset(("approximate", "rounding_mode", "reduce", "side", "equation", "assert_msg", "msg"))
"""String arguments an aten operator may take (``gelu(approximate="none")``, the message of a
runtime assert). An operator with any other string argument is refused: that is how aten's few
I/O operators (``from_file``, ``save``, ``_print``, ``warn``) take their file name or text."""
_PYTHON_TARGETS = frozenset(f"_operator.{op}" for op in (
    "getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_"))
"""Python-level nodes export emits for symbolic sizes (e.g. ``_operator.mul`` of two sizes)."""

_SYMPY_NAMES = frozenset((
    "Symbol", "Integer", "Rational", "Add", "Mul", "Pow", "Min", "Max", "Mod", "FloorDiv",
    "CeilDiv", "CleanDiv", "PythonMod", "IntTrueDiv", "FloorToInt", "CeilToInt", "TruncToInt",
    "ModularIndexing", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "True", "False",
    "positive", "integer", "nonnegative", "real"))
_SYMPY_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_]\w*)|'[a-z]+\d+'|\d+|[(),=+\-*/])")
_GUARD_TOKEN = re.compile(
    r"\s*(?:L\['(?P<input>\w+)'\]|\.size\(\)|\.stride\(\)|\[\d+\]|\d+|==|!=|<=|>=|<|>|//|[-+*%()]"
    r"|(?P<word>[A-Za-z_]\w*))")
_SYMBOL = re.compile(r"[a-z]+\d+")


def _tokens_ok(text: str, token: re.Pattern, allowed_word) -> bool:
    """True if ``text`` is entirely a sequence of ``token`` matches whose words pass ``allowed_word``."""
    pos = 0
    while pos < len(text):
        match = token.match(text, pos)
        if match is None or match.end() == pos:
            return text[pos:].strip() == ""
        if not allowed_word(match):
            return False
        pos = match.end()
    return True


def _sympy_ok(text: str) -> bool:
    return _tokens_ok(text, _SYMPY_TOKEN, lambda m: m.group("name") is None or m.group("name") in _SYMPY_NAMES)


def _guard_ok(text: str) -> bool:
    def allowed(m: re.Match) -> bool:
        if m.group("input") is not None:
            return m.group("input") in INPUT_NAMES
        return m.group("word") is None or m.group("word") in ("and", "or", "not")
    return _tokens_ok(text, _GUARD_TOKEN, allowed)


def _aten_ok(target: str) -> bool:
    """An aten operator overload without file or message arguments."""
    if not _ATEN_TARGET.fullmatch(target):
        return False
    _, _, _, name, overload = target.split(".")
    op = getattr(getattr(torch.ops.aten, name, None), overload, None)
    if not isinstance(op, torch._ops.OpOverload):
        return False
    return all(arg.name in _STR_ARGS for arg in op._schema.arguments
               if "str" in str(arg.type) and "Tensor" not in str(arg.type))


def _walk(obj, key: str = "") -> Iterator[tuple[str, object]]:
    """(key, value) of every dict item in a JSON tree, depth first."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, key)


def _check_program(program: dict) -> None:
    """Refuse a serialised program that could reach anything but aten operators."""
    for key, value in _walk(program):
        if key in ("target", "as_operator"):
            if not (isinstance(value, str) and (value in _PYTHON_TARGETS or _aten_ok(value))):
                raise ArtifactError(f"program calls {value!r}: only aten compute operators are allowed")
        elif key == "expr_str" and not (isinstance(value, str) and _sympy_ok(value)):
            raise ArtifactError(f"program has a symbolic expression outside the allowed grammar: {value!r}")
        elif key in ("as_custom_obj", "custom_obj_values") and value:
            raise ArtifactError("program holds custom (pickled) objects")
    for name in program.get("range_constraints", {}):
        if not _SYMBOL.fullmatch(name):
            raise ArtifactError(f"program has a range constraint on {name!r}, not a symbol name")
    for guard in program.get("guards_code", []):
        if not (isinstance(guard, str) and _guard_ok(guard)):
            raise ArtifactError(f"program has an input guard outside the allowed grammar: {guard!r}")


def _read_json(archive: zipfile.ZipFile, name: str) -> dict:
    try:
        doc = json.loads(archive.read(name))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{name}: not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{name}: expected a JSON object")
    return doc


def check_archive(data: bytes) -> None:
    """Raise :class:`ArtifactError` unless ``data`` is a pt2 archive of the kind we export."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise ArtifactError(f"not a pt2 (zip) archive: {err}") from None
    names = archive.namelist()
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise ArtifactError(f"a pt2 archive has one root folder; found entries {sorted(names)[:5]}")
    root = roots.pop() + "/"
    relative = {name[len(root):]: archive.getinfo(name) for name in names}
    unexpected = sorted(name for name in relative if not _ENTRIES.fullmatch(name))
    if unexpected:
        raise ArtifactError(f"unexpected entries in the archive: {unexpected}")
    for required in ("models/model.json", *_PAYLOADS):
        if required not in relative:
            raise ArtifactError(f"the archive has no {required}")
    if relative.get("data/sample_inputs/model.pt", zipfile.ZipInfo()).file_size:
        raise ArtifactError("the archive holds pickled example inputs (we export none)")
    for config_file, payload_name in _PAYLOADS.items():
        for fqn, meta in _read_json(archive, root + config_file).get("config", {}).items():
            if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
                raise ArtifactError(f"{config_file}: {fqn} is a pickled payload")
            if not payload_name.fullmatch(str(meta.get("path_name"))):
                raise ArtifactError(f"{config_file}: {fqn} points at {meta.get('path_name')!r}")
    _check_program(_read_json(archive, root + "models/model.json"))
