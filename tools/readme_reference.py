"""Rewrite README.md's config tables from dualpar/conf/reference.yaml (the source `dualpar --help` prints).

  python tools/readme_reference.py [--check]

Each table sits between `<!-- reference:NAME -->` and `<!-- /reference:NAME -->`; `--check` exits 1 if any
differs from what the reference generates (tests/unit/test_readme.py checks the same).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dualpar.reference import update_readme

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether README.md is up to date")
    args = parser.parse_args()
    text = README.read_text()
    new = update_readme(text)
    if args.check:
        print("README.md config tables are up to date" if new == text else "README.md config tables differ")
        return 0 if new == text else 1
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
