"""Stage 0's block latents, noise and solver state live on the compute device; only checkpoints go to the host.

A CPU cannot run CUDA, but it can check CUDA's device rules: the `meta` device stands in for the GPU. Meta
tensors have shapes and no data, and any op that mixes a meta tensor with a CPU tensor (other than a 0-d
scalar, which CUDA also takes from the host) raises, exactly as CUDA does. The queue is driven through a
whole plan as the engine drives it, with every velocity arriving on the device, then checkpointed (a meta
tensor copied to the host becomes an uninitialised host tensor of its shape) and resumed.

Device binding: `bind_device` is the one place a rank picks its device; with torch.cuda mocked it must bind
the process to its local rank's GPU before anything else touches CUDA.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dualpar.av.queue import AVBlockQueue
from dualpar.block_queue import BlockQueue
from dualpar.cli import prepare
from dualpar.job import JobLayout
from dualpar.models.loader import load_scheduler
from dualpar.models.registry import read_model_info
from dualpar.schedule.noise import CoordinatedNoise
from dualpar.testing.jobs import compose
from dualpar.topology import bind_device, pick_device

FAKE_GPU = torch.device("meta")  # the compute device; meta enforces CUDA's no-mixing rule on a CPU


class MetaToHost(TorchDispatchMode):
    """Copies from the meta device to the host give empty host tensors of the same shape and dtype."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and args[0].is_meta and kwargs.get("device") == torch.device("cpu"):
            return torch.empty(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        return func(*args, **kwargs)


def _job(kind: str) -> JobLayout:
    cfg, _ = prepare(compose(["model=tiny", "frames=45", "schedule.steps=3", f"job={kind}"]))
    return JobLayout(cfg, read_model_info("tiny", None, 0))


def _queue(job: JobLayout, device: torch.device) -> BlockQueue:
    scheduler = load_scheduler(job.info, job.cfg.schedule.flow_shift)
    scheduler.set_timesteps(job.plan.steps, device="cpu")
    if job.av is not None:
        return AVBlockQueue.for_job(job, scheduler, device, layout=job.av, seed=job.cfg.seed)
    return BlockQueue.for_job(job, scheduler, device)


def _velocity(job: JobLayout, block: int) -> tuple[torch.Tensor, ...]:
    """What the last stage returns for `block` (own frames only), on the compute device."""
    h, w = job.latent_hw
    frames = len(job.geometry.own_range(block))
    video = torch.randn(1, int(job.info.transformer["out_channels"]), frames, h, w, device=FAKE_GPU)
    if job.av is None:
        return (video,)
    audio = torch.randn(1, job.av.codec.latent_channels, len(job.av.own_audio(block)), device=FAKE_GPU)
    return (video, audio)


def _drive(queue: BlockQueue, job: JobLayout, iterations: range) -> None:
    """Stage 0's calls on the queue for `iterations` of the plan (engine order: retire, join, passes)."""
    for it in (job.plan.iterations[i] for i in iterations):
        if it.finished is not None:
            assert all(t.device == FAKE_GPU for t in queue.finish(it.finished)), "finished latents on the device"
        if it.joined is not None:
            queue.join(it.joined)
        for item in it.items:
            assert all(t.device == FAKE_GPU for t in queue.window(item)), "windows are assembled on the device"
            queue.apply(item, _velocity(job, item.block))


def _tensors(obj, seen=None):
    """Every tensor inside checkpoint data: nested dicts, lists and objects (solvers) alike."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from _tensors(vars(obj), seen)


@pytest.mark.parametrize("kind", ["video", "av"])
def test_solver_steps_never_mix_devices_and_checkpoints_live_on_the_host(kind):
    job = _job(kind)
    n = len(job.plan.iterations)
    half = n // 2
    queue = _queue(job, FAKE_GPU)
    _drive(queue, job, range(half))
    states = [*queue.blocks.values(), *getattr(queue, "audio", {}).values()]
    assert states and all(s.latents.device == FAKE_GPU for s in states)
    solver_state = [
        t
        for s in states
        for k, v in vars(s.scheduler).items()
        if k not in queue.tables
        for t in _tensors(v)
        if t.dim() > 0
    ]  # 0-d host scalars (timesteps) are fine on CUDA
    assert solver_state and all(t.device == FAKE_GPU for t in solver_state), "past outputs etc. on the device"

    with MetaToHost():
        saved = queue.state_dict()
    on_host = list(_tensors(saved))
    assert len(on_host) > 2 * len(states), "latents, previous versions and solver tensors are all saved"
    assert {t.device.type for t in on_host} == {"cpu"}, "a checkpoint holds only host tensors"
    assert all(s.latents.device == FAKE_GPU for s in states), "saving leaves the live state on the device"

    resumed = _queue(job, FAKE_GPU)
    resumed.load_state_dict(copy.deepcopy(saved))
    moved = [t for s in resumed.blocks.values() for t in (s.latents, s.previous) if t is not None]
    moved += [
        t
        for s in resumed.blocks.values()
        for k, v in vars(s.scheduler).items()
        if k not in resumed.tables
        for t in _tensors(v)
        if t.dim() > 0
    ]
    assert moved and all(t.device == FAKE_GPU for t in moved), "a resumed queue is back on the device"
    _drive(resumed, job, range(half, n))


def test_noise_is_drawn_on_the_host_and_identical_wherever_latents_live():
    job = _job("video")
    cpu = _queue(job, torch.device("cpu"))
    cpu.join(0)
    cpu.join(1)
    geo, (h, w) = job.geometry, job.latent_hw
    noise = CoordinatedNoise(
        job.cfg.seed, int(job.info.transformer["out_channels"]), geo.block_latents, geo.context_latents, h, w
    )
    assert torch.equal(cpu.blocks[0].latents, noise.next_block())
    assert torch.equal(cpu.blocks[1].latents, noise.next_block())
    meta = _queue(job, torch.device("meta"))  # any device: the numbers come from the same CPU generator
    meta.join(0)
    assert meta.blocks[0].latents.device.type == "meta"
    assert torch.equal(meta.noise.generator.get_state(), _queue(job, torch.device("cpu")).noise.generator.get_state())


class _FakeCuda:
    def __init__(self, count: int):
        self.count = count
        self.bound: list[int] = []

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "set_device", self.bound.append)


def test_bind_device_binds_each_rank_to_its_local_gpu(monkeypatch):
    cuda = _FakeCuda(count=2)
    cuda.install(monkeypatch)
    assert bind_device("auto", 0) == torch.device("cuda", 0)
    assert bind_device("cuda", 1) == torch.device("cuda", 1)
    assert bind_device("auto", 3) == torch.device("cuda", 1), "more ranks than GPUs share them round-robin"
    assert cuda.bound == [0, 1, 1]
    assert bind_device("cpu", 1) == torch.device("cpu") and cuda.bound == [0, 1, 1], "CPU ranks bind nothing"
    assert pick_device("auto", 1) == torch.device("cuda", 1) and cuda.bound == [0, 1, 1], "pick has no effects"


def test_worker_binds_the_device_before_connecting(monkeypatch):
    """worker_main binds the rank's GPU before any process group exists (the data plane's NCCL communicators
    and the report gather would otherwise land on cuda:0)."""
    import dualpar.launch.worker as worker
    from dualpar.topology import WorkerContext

    calls: list[str] = []

    def fake_bind(name, local_rank):
        calls.append(f"bind {local_rank}")
        return torch.device("cpu")

    class Stop(Exception):
        pass

    def fake_connect(ctx, cfg, device):
        calls.append("connect")
        raise Stop

    monkeypatch.setattr(worker, "bind_device", fake_bind)
    monkeypatch.setattr(worker, "connect", fake_connect)
    cfg, _ = prepare(compose(["model=tiny", "parallel.stages=2", "launcher=spawn"]))
    with pytest.raises(Stop):
        worker.worker_main(WorkerContext(1, 2, 1, "file:///nonexistent"), cfg)
    assert calls == ["bind 1", "connect"]


def test_two_ranks_on_one_gpu_need_the_host_staged_transport(monkeypatch):
    from dualpar.config import EngineConfig, ParallelConfig
    from dualpar.errors import ConfigError
    from dualpar.topology import WorkerContext
    from dualpar.transport.link import connect, data_backend

    _FakeCuda(count=1).install(monkeypatch)
    direct = EngineConfig(parallel=ParallelConfig(stages=2))
    staged = EngineConfig(parallel=ParallelConfig(stages=2, transport="host_staged"))
    gpu = torch.device("cuda", 0)
    assert data_backend(direct, gpu) == "nccl" and data_backend(staged, gpu) == "gloo"
    assert data_backend(direct, torch.device("cpu")) == "gloo"
    with pytest.raises(ConfigError, match="parallel.transport.*host_staged"):
        connect(WorkerContext(1, 2, 1, "file:///nonexistent"), direct, gpu)  # before any rendezvous
