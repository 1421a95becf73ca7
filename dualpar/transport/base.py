"""The Transport protocol: the only way tensors move between stages."""

from __future__ import annotations

from typing import Protocol

import torch


class Transport(Protocol):
    """Point-to-point tensor messages in one global order (so matching needs no headers)."""

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        """Start sending; returns at once unless `max_sends_in_flight` sends to `dst` are outstanding."""

    def expect(self, src: int, shape: tuple[int, ...], dtype: torch.dtype, count: int) -> None:
        """Declare that `count` messages of this static shape will come from `src` (receives are pre-posted)."""

    def recv(self, src: int) -> torch.Tensor:
        """The next message from `src` (waits for it, at most the peer timeout)."""

    def broadcast(self, tensor: torch.Tensor, src: int) -> torch.Tensor: ...

    def flush(self) -> None:
        """Wait for every outstanding send."""
