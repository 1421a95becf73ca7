"""`python -m dualpar`: the same command as `dualpar`."""

from dualpar.cli import main

if __name__ == "__main__":
    main()
