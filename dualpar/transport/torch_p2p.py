"""torch.distributed point-to-point transport (gloo on CPU, NCCL on GPU).

Receive buffers are preallocated with the static shapes the plan implies and pre-posted a few messages
ahead, so communication overlaps compute; sends are bounded in flight per peer and every handle is waited.
A peer that dies or stays silent past the timeout raises PeerError naming its rank.
"""

from __future__ import annotations

from collections import deque
from datetime import timedelta

import torch
import torch.distributed as dist

from dualpar.errors import PeerError
from dualpar.transport.base import Message, TensorSpec


class TorchP2PTransport:
    """Transport over an initialised default process group."""

    def __init__(
        self,
        rank: int,
        timeout_s: float,
        max_in_flight: int = 2,
        prepost: int = 2,
        device: torch.device | None = None,
    ):
        self.rank = rank
        self.timeout = timedelta(seconds=timeout_s)
        self.max_in_flight = max_in_flight
        self.prepost = prepost
        self.device = device or torch.device("cpu")
        self._sends: dict[int, deque] = {}
        self._recvs: dict[int, deque] = {}
        self._expect: dict[int, list] = {}

    def _wait(self, work, peer: int, what: str) -> None:
        try:
            ok = work.wait(self.timeout)
        except RuntimeError as err:
            if "timed out" in str(err).lower():  # gloo reports a silent peer this way
                raise PeerError(
                    f"rank {self.rank}: {what} rank {peer} did not complete within {self.timeout} "
                    "(the peer is stuck or overloaded; parallel.timeout_s sets the limit)"
                ) from err
            raise PeerError(f"rank {self.rank}: {what} rank {peer} failed ({err}); the peer died or left") from err
        if ok is False:
            raise PeerError(f"rank {self.rank}: {what} rank {peer} did not complete within {self.timeout}")

    def send(self, message: Message, dst: int) -> None:
        """Send every tensor of `message` in order (one isend each; at most `max_in_flight` messages wait)."""
        queue = self._sends.setdefault(dst, deque())
        while len(queue) >= self.max_in_flight:
            works, _ = queue.popleft()
            for work in works:
                self._wait(work, dst, "send to")
        tensors = tuple(t.contiguous() for t in message)
        try:
            works = [dist.isend(t, dst) for t in tensors]
        except RuntimeError as err:
            raise PeerError(f"rank {self.rank}: send to rank {dst} failed ({err}); the peer died or left") from err
        queue.append((works, tensors))

    def expect(self, src: int, spec: tuple[TensorSpec, ...], count: int, depth: int | None = None) -> None:
        """Pre-post receives for `count` messages from `src`, `depth` of them at a time (default `prepost`)."""
        self._expect[src] = [tuple(spec), count, depth or self.prepost]
        self._recvs[src] = deque()
        self._post(src)

    def _post(self, src: int) -> None:
        spec, remaining, depth = self._expect[src]
        queue = self._recvs[src]
        while remaining > 0 and len(queue) < depth:
            bufs = tuple(torch.empty(s.shape, dtype=s.dtype, device=self.device) for s in spec)
            try:
                works = [dist.irecv(b, src) for b in bufs]
            except RuntimeError as err:
                raise PeerError(f"rank {self.rank}: receive from rank {src} failed ({err}); the peer died") from err
            queue.append((works, bufs))
            remaining -= 1
        self._expect[src][1] = remaining

    def recv(self, src: int) -> Message:
        queue = self._recvs.get(src)
        if not queue:
            raise PeerError(f"rank {self.rank}: no message from rank {src} was expected (plan mismatch)")
        works, bufs = queue.popleft()
        for work in works:
            self._wait(work, src, "receive from")
        self._post(src)
        return bufs

    def broadcast(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        work = dist.broadcast(tensor, src=src, async_op=True)
        self._wait(work, src, "broadcast from")
        return tensor

    def flush(self) -> None:
        for dst, queue in self._sends.items():
            while queue:
                works, _ = queue.popleft()
                for work in works:
                    self._wait(work, dst, "send to")
