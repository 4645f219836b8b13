"""`cloudir demo`: the whole job against a local AWS emulator.

`demo` is added to the root app by `cli/__init__.py`, in the order help lists it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudir.cli.common import handled, locks_case, say
from cloudir.cli.detect import print_findings


@handled
@locks_case(creates=True, adoptable=False)
def demo(
    case: Annotated[Path, typer.Option("--case", help="Case folder to create.")] = Path(
        "demo-case"
    ),
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier demo case in that folder.")
    ] = False,
) -> None:
    """Run the whole job against a local AWS emulator: no account, no network.

    Example: cloudir demo --case ./demo-case
    """
    from cloudir.demo import run_demo

    run_demo(case, say, print_findings, replace=force)
