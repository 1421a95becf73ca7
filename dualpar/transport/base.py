"""The Transport protocol: the only way tensors move between stages.

A message is a tuple of tensors with static shapes (one tensor for a `video` job; video and audio for an `av`
job). Its tensors travel in a fixed order, so matching needs no headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one tensor of a message (receive buffers are preallocated from it)."""

    shape: tuple[int, ...]
    dtype: torch.dtype


Message = tuple[torch.Tensor, ...]


class Transport(Protocol):
    """Point-to-point messages in one global order (so matching needs no headers)."""

    def send(self, message: Message, dst: int) -> None:
        """Start sending; returns at once unless `max_sends_in_flight` sends to `dst` are outstanding."""

    def expect(self, src: int, spec: tuple[TensorSpec, ...], count: int, depth: int | None = None) -> None:
        """Declare that `count` messages laid out as `spec` will come from `src`; `depth` receives are kept
        posted ahead (the transport's default when None)."""

    def recv(self, src: int) -> Message:
        """The next message from `src` (waits for it, at most the peer timeout)."""

    def broadcast(self, tensor: torch.Tensor, src: int) -> torch.Tensor: ...

    def flush(self) -> None:
        """Wait for every outstanding send."""
