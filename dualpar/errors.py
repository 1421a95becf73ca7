"""User-facing errors: a bad option names its config key and how to fix it (the CLI exits with code 2)."""

from __future__ import annotations


class ConfigError(ValueError):
    """An impossible or inconsistent option, detected before any weights load."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(f"{key}: {problem}. Fix: {fix}")


class PeerError(RuntimeError):
    """A pipeline peer died, stalled past `parallel.timeout_s`, or sent something unexpected."""
