"""Connect one rank of a multi-stage job: rendezvous store, control plane, process groups and transport.

Two planes, set up here and nowhere else:
- control plane: the rendezvous store (heartbeats and abort, `ControlPlane`) and the default process group,
  always gloo, in host memory. It carries the start-up broadcasts and the end-of-run report gather, so no
  Python object is ever put on a GPU, and it behaves the same on CPU and GPU.
- data plane: one process group per direction of each neighbour pair of the stage ring (j -> j+1, and the
  last stage -> 0), NCCL on GPUs, gloo on CPUs or with `parallel.transport=host_staged`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from dualpar.config import EngineConfig
from dualpar.errors import ConfigError
from dualpar.topology import WorkerContext
from dualpar.transport.control import ControlPlane
from dualpar.transport.torch_p2p import TorchP2PTransport


@dataclass
class Link:
    """What one rank of a multi-stage job talks through; `close` tears it down."""

    ctx: WorkerContext
    transport: TorchP2PTransport
    control: ControlPlane
    data_backend: str  # nccl | gloo

    def gather_reports(self, own: dict) -> list[dict]:
        """Every rank's report dict on rank 0 (empty elsewhere), over the gloo control group."""
        return self.transport.gather_object(own, 0, self.ctx.world_size) or []

    def fail(self, err: BaseException) -> None:
        """This rank is failing with `err`: tell every rank to stop now (their watchdogs end them)."""
        self.control.abort(f"{type(err).__name__}: {err}")

    def close(self, done: bool) -> None:
        """Stop the control plane (`done`: this rank finished) and destroy every process group."""
        self.control.close(done)
        if dist.is_initialized():
            dist.destroy_process_group()


def data_backend(cfg: EngineConfig, device: torch.device) -> str:
    """NCCL between GPUs; gloo on CPUs and when the transport stages messages through host memory."""
    return "nccl" if device.type == "cuda" and cfg.parallel.transport == "direct" else "gloo"


def backstop_s(timeout_s: float) -> float:
    """The data plane's own wait limit: past the control plane's (timeout_s + heartbeats), never deciding."""
    return 2 * timeout_s + 30


def connect(ctx: WorkerContext, cfg: EngineConfig, device: torch.device) -> Link | None:
    """Join the job's process groups (None for a single stage: no communication at all)."""
    if ctx.world_size == 1:
        return None
    if dist.is_initialized():
        raise RuntimeError("a process group already exists in this process; dualpar creates its own")
    backend = data_backend(cfg, device)
    if backend == "nccl" and ctx.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            "parallel.transport",
            f"is direct, but local rank {ctx.local_rank} has no GPU of its own ({torch.cuda.device_count()} "
            "visible) and NCCL refuses two ranks on one GPU",
            "use parallel.transport=host_staged to share GPUs, or at most one stage per GPU on each node",
        )
    timeout = timedelta(seconds=backstop_s(cfg.parallel.timeout_s))
    store = rendezvous_store(ctx, timeout)
    dist.init_process_group(
        "gloo", store=dist.PrefixStore("pg/", store), rank=ctx.rank, world_size=ctx.world_size, timeout=timeout
    )
    control = ControlPlane(dist.PrefixStore("control/", store), ctx.rank, ctx.world_size, cfg.parallel.timeout_s)
    control.start()
    send, recv = direction_groups(ctx, backend, timeout)
    transport = TorchP2PTransport(
        ctx.rank,
        send,
        recv,
        timeout.total_seconds(),
        device=device,
        host_staged=cfg.parallel.transport == "host_staged",
        control=control,
        max_in_flight=cfg.parallel.max_sends_in_flight,
    )
    return Link(ctx, transport, control, backend)


def direction_groups(
    ctx: WorkerContext, backend: str, timeout: timedelta
) -> tuple[dict[int, dist.ProcessGroup], dict[int, dist.ProcessGroup]]:
    """One group per edge j -> (j+1) mod N of the stage ring (every rank creates all of them, in order):
    ({next rank: group this rank sends on}, {previous rank: group this rank receives on}). With two stages
    both edges join ranks 0 and 1, yet each direction has its own communicator."""
    n = ctx.world_size
    groups = [dist.new_group(sorted({j, (j + 1) % n}), backend=backend, timeout=timeout) for j in range(n)]
    return {ctx.next_rank: groups[ctx.rank]}, {ctx.prev_rank: groups[ctx.prev_rank]}


def rendezvous_store(ctx: WorkerContext, timeout: timedelta) -> dist.Store:
    """The store every rank of this attempt shares (file:// for spawn and tests, env:// for torchrun and Ray)."""
    assert ctx.init_method is not None, "a multi-stage rank needs an init_method"
    if ctx.init_method == "env://":
        agent = _torchrun_attempt_store(timeout)
        if agent is not None:
            return agent
    store, _, _ = next(dist.rendezvous(ctx.init_method, ctx.rank, ctx.world_size, timeout=timeout))
    return store


def _torchrun_attempt_store(timeout: timedelta) -> dist.Store | None:
    """torchrun (`--max-restarts`) keeps one shared rendezvous TCPStore across restarts, and the process group's
    keys carry no attempt number: a restarted rank could read the dead group's gloo addresses and wait forever to
    connect. Each attempt gets its own key space. None when torchrun does not share its store."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    return dist.PrefixStore(f"dualpar/attempt_{attempt}/", store)
