"""The resolved config and what each key means (``dnr config show``), or whether it loads
(``dnr config validate``).

    dnr config show                                            # the dataclass defaults
    dnr config show --config cluster/configs/daily_gpu.yaml train.epochs=2
    dnr config validate --config my.yaml train.epochs=2        # "ok", or the bad key/value, status 2

The help of each key is its field's docstring in dnr/config/ (the string under the field).
``dnr train`` without --config on an embedded Ray reads jobs/configs/local.yaml: pass it here
as --config to see what such a run uses. Exit statuses: 0 shown / ok; 2 a bad argument, an
unknown section or key, a bad value or an unreadable file (one line on stderr naming it).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import typing

from dnr.config import JobConfig, config_to_dict, load_config
from dnr.runtime import JobArgumentParser, JobError, refuse


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    p = JobArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True, metavar="{show,validate}", parser_class=JobArgumentParser)
    for name, help_ in (("show", "print every key of every section: its value and its help"),
                        ("validate", "load the config: print ok, or name the bad key/value (status 2)")):
        action = sub.add_parser(name, help=help_, description=help_)
        action.add_argument("--config", default=None, help="YAML config (default: the dataclass defaults)")
        action.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=2")
    return p.parse_args(argv)


def main(argv=None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        cfg = load_config(args.config, args.overrides)
    except ValueError as error:
        return refuse("config", JobError(str(error)))
    if args.action == "validate":
        print("ok")
    else:
        print(f"# config: {args.config or '(the dataclass defaults)'}"
              + (f"; overrides: {' '.join(args.overrides)}" if args.overrides else ""))
        print(show_config(cfg))
    return 0


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring (the string literal right under the field), read from the
    dataclass's source; fields without one are absent."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def sections() -> dict[str, type]:
    """Section name -> its dataclass, in :class:`JobConfig` order."""
    hints = typing.get_type_hints(JobConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(JobConfig)}


def _value(value) -> str:
    """As an override would spell it, so a line can be pasted back as ``key=value``."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def show_config(cfg: JobConfig, width: int = 96) -> str:
    """Every section (with its help), then each key as ``section.key = value`` and its help."""
    out, values, section_docs = [], config_to_dict(cfg), field_docs(JobConfig)
    for name, cls in sections().items():
        out.append(f"\n[{name}] {section_docs.get(name, '')}".rstrip())
        docs = field_docs(cls)
        for key, value in values[name].items():
            out.append(f"{name}.{key} = {_value(value)}")
            out += textwrap.wrap(docs.get(key, "(no help)"), width, initial_indent="    ",
                                 subsequent_indent="    ")
    return "\n".join(out).lstrip("\n")
