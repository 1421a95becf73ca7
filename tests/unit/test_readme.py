"""README.md runs as written: its config tables are the reference `dualpar --help` prints, every key of the
composed config is in them, and every `dualpar` command in its shell examples composes (Hydra parses it)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from dualpar.api import compose
from dualpar.reference import documented_keys, flat_keys, readme_blocks, readme_tables

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readme_tables_are_the_reference() -> None:
    tables = readme_tables(README)
    blocks = readme_blocks()
    assert sorted(tables) == sorted(blocks), "every reference section has its marked table in README.md"
    for name, table in blocks.items():
        assert tables[name] == table, f"README.md table {name!r} is stale: run python tools/readme_reference.py"


def test_every_composed_key_is_documented() -> None:
    keys: set[str] = set()
    for overrides in ([], ["job=av"], ["job=sparse_video"], ["attention=sliding_tile"], ["model=tiny"]):
        keys |= {k for k, _ in flat_keys(compose(overrides))}
    assert keys - documented_keys() == set(), "add these keys to dualpar/conf/reference.yaml"
    assert "output.progress" in keys and "output.preview" in keys


def _commands(text: str) -> list[list[str]]:
    """The overrides of every `dualpar ...` command in the README's bash blocks."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for command in line.split("&&"):
                words = shlex.split(command, comments=True)
                if "dualpar" not in words:
                    continue
                rest = words[words.index("dualpar") + 1 :]
                found.append([w for w in rest if "=" in w and not w.startswith("-")])
    return found


def test_every_readme_command_composes() -> None:
    commands = _commands(README)
    assert len(commands) >= 5
    for overrides in commands:
        raw = compose(overrides)  # raises ConfigError (what `dualpar` exits 2 with) on a bad override
        if any(o.startswith("prompt=") for o in overrides):
            assert isinstance(raw["prompt"], (str, list)), overrides
    wan = next(c for c in commands if "model=wan2.1-t2v-1.3b" in c and any(o.startswith("prompt=") for o in c))
    assert compose(wan)["prompt"] == "A cat walks on the grass, realistic"
