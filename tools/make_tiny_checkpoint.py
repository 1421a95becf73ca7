"""Write a tiny random-weight Wan pipeline as a diffusers directory: `python tools/make_tiny_checkpoint.py OUT`."""

from __future__ import annotations

import argparse
from pathlib import Path

from dualpar.testing.tiny_checkpoint import write_tiny_checkpoint
from dualpar.testing.tiny_skyreels import write_tiny_skyreels_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="directory to create")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--init-seed", type=int, default=0)
    parser.add_argument(
        "--boundary-ratio", type=float, default=None, help="write a Wan2.2-A14B-style directory with two experts"
    )
    parser.add_argument(
        "--skyreels-df", action="store_true", help="write a SkyReels-V2 diffusion-forcing directory (tiny only)"
    )
    args = parser.parse_args()
    if args.skyreels_df:
        path = write_tiny_skyreels_checkpoint(args.out, args.init_seed)
    else:
        path = write_tiny_checkpoint(args.out, args.preset, args.init_seed, args.boundary_ratio)
    print(f"wrote {path} (load it with model.path={path})")


if __name__ == "__main__":
    main()
