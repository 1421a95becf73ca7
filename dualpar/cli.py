"""The `dualpar` command (also `python -m dualpar`): a thin layer over `dualpar.api`.

Arguments are Hydra overrides (`key=value`, `group=option`); `--help` prints every group and key from the
config reference, `--version` dualpar's version. Every bad option, Hydra's syntax errors included, exits with
code 2 and one message naming the key and the fix, before any weights load; a failed pipeline exits 1.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from dualpar.api import prepare, render_config  # noqa: F401  (prepare: the validated-config entry point)
from dualpar.errors import ConfigError, PeerError

USAGE = "usage: dualpar [group=option ...] [key=value ...] | --help | --version"


def run(raw: Mapping[str, Any]) -> int:
    """Validate, print the plan, launch a composed config; returns the process exit code."""
    return _guarded(lambda: render_config(raw, log=sys.stderr))


def cli(argv: Sequence[str]) -> int:
    """The command line -> exit code."""
    from dualpar import __version__

    args = list(argv)
    if any(a in ("-h", "--help") for a in args):
        from dualpar.reference import help_text

        print(help_text(__version__))
        return 0
    if "--version" in args:
        print(f"dualpar {__version__}")
        return 0
    flags = [a for a in args if a.startswith("-") and "=" not in a]
    if flags:
        print(f"dualpar: error: unknown flag {flags[0]}: arguments are key=value overrides\n{USAGE}", file=sys.stderr)
        return 2

    from dualpar.api import compose

    return _guarded(lambda: render_config(compose(args), log=sys.stderr))


def _guarded(go) -> int:
    try:
        result = go()
    except ConfigError as err:
        print(f"dualpar: error: {err}", file=sys.stderr)
        return 2
    except PeerError as err:
        print(f"dualpar: error: {err}", file=sys.stderr)
        return 1
    report = result.report
    if report is not None:
        outs = ", ".join(f"{k}: {v}" for k, v in report["outputs"].items())
        print(
            f"dualpar: {report['frames_written']} frames, {report['blocks']} blocks in {report['wall_s']:.1f} s "
            f"-> {outs}",
            file=sys.stderr,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(cli(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
