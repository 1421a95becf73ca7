"""Helpers for tests and benchmarks: tiny checkpoints, the diffusers oracle, spawning rank groups."""
