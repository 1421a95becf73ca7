"""The data plane has one process group per direction of each neighbour pair of the stage ring, and the
transport uses them: a rank sends to its next stage on one group and receives from its previous stage on
another, even with two stages where both neighbours are the same rank (NCCL would otherwise queue the
pre-posted receives of both directions on one communicator's stream). Real gloo processes."""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import tempfile
from pathlib import Path

import pytest
import torch

from dualpar.config import EngineConfig, ParallelConfig
from dualpar.topology import WorkerContext
from dualpar.transport.base import TensorSpec


def _rank(rank: int, world: int, rdzv: str, results) -> None:
    import torch.distributed as dist

    from dualpar.transport.link import connect

    used: list[tuple[str, int, str]] = []
    isend, irecv = dist.isend, dist.irecv

    def record_send(tensor, dst, group=None, **kw):
        used.append(("send", dst, group.group_name))
        return isend(tensor, dst, group=group, **kw)

    def record_recv(tensor, src, group=None, **kw):
        used.append(("recv", src, group.group_name))
        return irecv(tensor, src, group=group, **kw)

    dist.isend, dist.irecv = record_send, record_recv
    cfg = EngineConfig(parallel=ParallelConfig(stages=world, timeout_s=60))
    link = connect(WorkerContext(rank, world, rank, rdzv), cfg, torch.device("cpu"))
    t = link.transport
    ctx = link.ctx
    spec = (TensorSpec((4,), torch.float32), TensorSpec((2, 3), torch.bfloat16))
    t.expect(ctx.prev_rank, spec, count=3)  # every rank pre-posts its receives before its first send
    for i in range(3):
        t.send((torch.full((4,), 10.0 * rank + i), torch.full((2, 3), float(i), dtype=torch.bfloat16)), ctx.next_rank)
    got = [t.recv(ctx.prev_rank) for _ in range(3)]
    t.flush()
    send_group = t.send_groups[ctx.next_rank]
    recv_group = t.recv_groups[ctx.prev_rank]
    reports = link.gather_reports(
        {
            "rank": rank,
            "send": (send_group.group_name, dist.get_process_group_ranks(send_group), dist.get_backend(send_group)),
            "recv": (recv_group.group_name, dist.get_process_group_ranks(recv_group), dist.get_backend(recv_group)),
            "default": dist.get_backend(),
            "used": used,
            "got": [(m[0].tolist(), m[1].float().tolist(), str(m[1].dtype)) for m in got],
        }
    )
    link.close(done=True)
    if rank == 0:
        results.put(reports)


def _run(world: int) -> list[dict]:
    mpc = mp.get_context("spawn")
    results = mpc.Queue()
    with tempfile.TemporaryDirectory(prefix="dualpar-groups-") as tmp:
        rdzv = f"file://{Path(tmp) / 'rdzv'}"
        procs = [mpc.Process(target=_rank, args=(r, world, rdzv, results)) for r in range(world)]
        for p in procs:
            p.start()
        try:
            reports = results.get(timeout=180)
        except queue_mod.Empty:
            reports = None
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert reports is not None and all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return reports


@pytest.mark.timeout(400)
@pytest.mark.parametrize("world", [2, 3])
def test_one_group_per_direction_and_the_transport_uses_them(world):
    reports = _run(world)
    for r in reports:
        rank, nxt, prev = r["rank"], (r["rank"] + 1) % world, (r["rank"] - 1) % world
        assert r["default"] == "gloo", "the default group is the gloo control group"
        assert r["send"][0] != r["recv"][0], f"rank {rank}: sends and receives share a communicator"
        assert sorted(r["send"][1]) == sorted({rank, nxt}) and sorted(r["recv"][1]) == sorted({rank, prev})
        assert r["send"][2] == r["recv"][2] == "gloo"
        sends = {g for op, peer, g in r["used"] if op == "send"}
        recvs = {g for op, peer, g in r["used"] if op == "recv"}
        assert sends == {r["send"][0]} and recvs == {r["recv"][0]}, "every message goes over its direction's group"
        assert r["got"] == [([10.0 * prev + i] * 4, [[float(i)] * 3] * 2, "torch.bfloat16") for i in range(3)]
    # the group rank j sends on is the one rank j+1 receives on: one group per directed edge of the ring
    by_rank = {r["rank"]: r for r in reports}
    for j in range(world):
        assert by_rank[j]["send"][0] == by_rank[(j + 1) % world]["recv"][0]
    assert len({r["send"][0] for r in reports}) == world
