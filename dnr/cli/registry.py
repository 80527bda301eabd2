"""``dnr registry``: read the model registry (:mod:`dnr.registry.cli`, also ``python -m dnr.registry``).

    dnr registry --lake ./lake list [--model dnr] [--json]
    dnr registry --lake ./lake show dnr-v0003
    dnr registry --lake s3://bucket/lake production [--model dnr]

Exit statuses: 0 shown; 1 no such version, or no production version; 2 bad arguments.
Promotion and rollback are ``dnr promote`` and ``dnr rollback``.
"""

from __future__ import annotations

from dnr.registry import cli


def main(argv=None, prog: str | None = None) -> int:
    """The registry's own command line; its usage names it ``python -m dnr.registry``."""
    return cli.main(argv)
