"""torch.distributed point-to-point transport: the data plane (NCCL on GPU, gloo on CPU or host-staged).

Each direction of each neighbour pair has its own process group (as in xDiT and DualParal): NCCL runs one
communicator's operations in order on one stream, so with a shared group the receives both sides pre-post
before their first send would block the sends behind them. Receive buffers are preallocated with the static
shapes the plan implies and pre-posted a few messages ahead, so communication overlaps compute; sends are
bounded in flight per peer and every handle is waited.

`host_staged`: tensors are copied to host memory and travel over gloo, returned on the compute device. It lets
two ranks share one GPU (NCCL refuses two ranks on one device) at the cost of two copies per message.

Liveness is not decided here: waits run inside the control plane's `waiting()` (dualpar.transport.control),
whose watchdog reports a silent peer within `parallel.timeout_s`. A peer that dies mid-message still raises
PeerError naming its rank; the wait's own timeout is only a backstop.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import nullcontext
from datetime import timedelta

import torch
import torch.distributed as dist

from dualpar.errors import PeerError
from dualpar.transport.base import Message, TensorSpec
from dualpar.transport.control import ControlPlane


class TorchP2PTransport:
    """Transport over per-direction process groups: `send_groups[dst]` carries this rank's messages to `dst`,
    `recv_groups[src]` the messages from `src` (distinct groups even when dst == src, as with two stages)."""

    def __init__(
        self,
        rank: int,
        send_groups: dict[int, dist.ProcessGroup],
        recv_groups: dict[int, dist.ProcessGroup],
        backstop_s: float,
        device: torch.device | None = None,
        host_staged: bool = False,
        control: ControlPlane | None = None,
        max_in_flight: int = 2,
        prepost: int = 2,
    ):
        self.rank = rank
        self.send_groups = send_groups
        self.recv_groups = recv_groups
        self.timeout = timedelta(seconds=backstop_s)
        self.device = device or torch.device("cpu")
        self.host_staged = host_staged
        self.wire_device = torch.device("cpu") if host_staged else self.device  # where buffers travel from
        self.poll = self.wire_device.type == "cuda"  # NCCL waits do not block the host: poll, then wait
        self.control = control
        self.max_in_flight = max_in_flight
        self.prepost = prepost
        self._sends: dict[int, deque] = {}
        self._recvs: dict[int, deque] = {}
        self._expect: dict[int, list] = {}

    def _wait(self, work, peer: int, what: str, poll: bool | None = None) -> None:
        poll = self.poll if poll is None else poll
        with self.control.waiting() if self.control is not None else nullcontext():
            try:
                while poll and not work.is_completed():
                    time.sleep(0.0002)
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
        if self.control is not None:
            self.control.progress()

    def send(self, message: Message, dst: int) -> None:
        """Send every tensor of `message` in order (one isend each; at most `max_in_flight` messages wait)."""
        queue = self._sends.setdefault(dst, deque())
        while len(queue) >= self.max_in_flight:
            works, _ = queue.popleft()
            for work in works:
                self._wait(work, dst, "send to")
        tensors = tuple(t.to(self.wire_device).contiguous() for t in message)
        group = self.send_groups[dst]
        try:
            works = [dist.isend(t, dst, group=group) for t in tensors]
        except RuntimeError as err:
            raise PeerError(f"rank {self.rank}: send to rank {dst} failed ({err}); the peer died or left") from err
        queue.append((works, tensors))
        if self.control is not None:
            self.control.progress()

    def expect(self, src: int, spec: tuple[TensorSpec, ...], count: int, depth: int | None = None) -> None:
        """Pre-post receives for `count` messages from `src`, `depth` of them at a time (default `prepost`)."""
        self._expect[src] = [tuple(spec), count, depth or self.prepost]
        self._recvs[src] = deque()
        self._post(src)

    def _post(self, src: int) -> None:
        spec, remaining, depth = self._expect[src]
        queue = self._recvs[src]
        group = self.recv_groups[src]
        while remaining > 0 and len(queue) < depth:
            bufs = tuple(torch.empty(s.shape, dtype=s.dtype, device=self.wire_device) for s in spec)
            try:
                works = [dist.irecv(b, src, group=group) for b in bufs]
            except RuntimeError as err:
                raise PeerError(f"rank {self.rank}: receive from rank {src} failed ({err}); the peer died") from err
            queue.append((works, bufs))
            remaining -= 1
        self._expect[src][1] = remaining

    def recv(self, src: int) -> Message:
        """The next message from `src`, on the compute device."""
        queue = self._recvs.get(src)
        if not queue:
            raise PeerError(f"rank {self.rank}: no message from rank {src} was expected (plan mismatch)")
        works, bufs = queue.popleft()
        for work in works:
            self._wait(work, src, "receive from")
        self._post(src)
        return tuple(b.to(self.device) for b in bufs)

    def broadcast(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """`tensor` from rank `src` on every rank, over the default (gloo, host-memory) group: it carries
        only start-up data (prompt embeddings, the start iteration); the result is on `tensor`'s device."""
        host = tensor.cpu()
        work = dist.broadcast(host, src=src, async_op=True)
        self._wait(work, src, "broadcast from", poll=False)
        return host.to(tensor.device)

    def gather_object(self, obj: object, dst: int, world_size: int) -> list | None:
        """Every rank's `obj` on rank `dst` (None elsewhere), over the default gloo group: never on a GPU."""
        gathered: list | None = [None] * world_size if self.rank == dst else None
        with self.control.waiting() if self.control is not None else nullcontext():
            dist.gather_object(obj, gathered, dst=dst)
        return gathered

    def flush(self) -> None:
        for dst, queue in self._sends.items():
            while queue:
                works, _ = queue.popleft()
                for work in works:
                    self._wait(work, dst, "send to")
