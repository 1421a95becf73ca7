"""Attention backends for DiT self-attention: dense (the oracle) and sparse variants, behind one interface."""

from dualpar.attention.base import AttentionBackend, AttnCall, AttnStats
from dualpar.attention.registry import build_backend, register_backend

__all__ = ["AttentionBackend", "AttnCall", "AttnStats", "build_backend", "register_backend"]
