"""Command-line plumbing the subcommands share: -v/-q, and one flag per stage parameter."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import stages  # noqa: F401  (registers every stage)
from pipeline.config import stage_fields


def verbosity(p: argparse.ArgumentParser) -> None:
    """-v/-q on a subcommand (every subcommand has them)."""
    p.add_argument("-v", "--verbose", action="store_true", help="more log lines")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def stage_flags(g: Any, name: str, *, prefixed: bool = True) -> None:
    """A flag per parameter of stage *name* on *g* (a parser or an argument group), its value in
    ``args.<name>.<field>`` (None when not given; pipeline.config layers it over the file):
    ``--<name>-<field>`` with the parameter's own aliases (``run``), or ``--<field>`` (``train``)."""
    for f, typ in stage_fields(name):
        flag = f"--{name}-{f.name.replace('_', '-')}" if prefixed else f"--{f.name.replace('_', '-')}"
        flags = [flag, *list(f.metadata.get("flags", ()))] if prefixed else [flag]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        helptext = f"{f.metadata.get('help', f.name)} (default: {default!r})"
        dest = f"{name}.{f.name}"
        if typ is bool:
            g.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            g.add_argument(*flags, dest=dest, default=None, metavar=f.name.upper(), choices=f.metadata.get("choices"), help=helptext)
