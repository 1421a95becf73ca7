"""Devices and links of a cluster, loaded from `conf/cluster/*.yaml`.

The performance model needs a device's sustained throughput (peak x an efficiency factor we state), its
memory, and what one hop between neighbouring stages costs. Without peer-to-peer access a GPU->GPU message
is staged through host memory: two copies over PCIe, modelled as twice the transfer time.
The YAML files are plain data (read with OmegaConf), so no Hydra application is needed to use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Source checkout: <repo>/conf/cluster; installed package: dualpar/conf/cluster (pyproject package-dir).
CONF_DIRS = (
    Path(__file__).resolve().parents[2] / "conf" / "cluster",
    Path(__file__).resolve().parents[1] / "conf" / "cluster",
)
GIB = 1024**3


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator (or a CPU process): throughput, efficiencies and memory."""

    name: str
    peak_tflops: float
    efficiency: float
    memory_gib: float
    mem_bandwidth_gbs: float
    vae_efficiency: float
    runtime_overhead_gb: float = 0.5

    @property
    def flops_per_s(self) -> float:
        return self.peak_tflops * 1e12 * self.efficiency

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * GIB


@dataclass(frozen=True)
class LinkSpec:
    """A stage-to-stage hop: effective bandwidth per direction, per-message latency, P2P or host-staged.

    `send_cpu_us` / `recv_cpu_us` are the time a stage itself is busy per message (posting a send, taking a
    received tensor). On GPUs that is negligible; on a CPU host the gloo calls and copies run on the same cores
    as the layers, so they add to a stage's work instead of overlapping it.
    """

    bandwidth_gbs: float
    latency_us: float
    p2p: bool
    send_cpu_us: float = 0.0
    recv_cpu_us: float = 0.0

    def transfer_s(self, nbytes: float) -> float:
        copies = 1 if self.p2p else 2  # host staging: device->host, then host->device
        return self.latency_us * 1e-6 + copies * nbytes / (self.bandwidth_gbs * 1e9)


@dataclass(frozen=True)
class ClusterSpec:
    """A homogeneous group of devices connected pairwise by identical links."""

    name: str
    gpus: int
    device: DeviceSpec
    link: LinkSpec
    dtype_bytes: int = 2
    scheduler_s: float = 0.002
    cores: int = 0
    threads_per_process: int = 0
    host_tflops: float = 1.0  # sustained host CPU rate, for a text encoder run off the device
    corun_slowdown: float = 1.0  # CPU hosts: compute slowdown of a process while every core is busy
    group_init_s: float = 0.0  # process-group rendezvous of a multi-rank run (rank 0's wait)
    rank_start_s: float = 0.0  # launch delay of each further rank, which rank 0 waits for at the rendezvous

    def compute_slowdown(self, processes: int) -> float:
        """Per-process compute slowdown of `processes` ranks on `cores` cores (1.0 without a core count).

        More threads than cores run proportionally slower; once more than one core computes, each process also
        runs `corun_slowdown` slower (shared caches and memory bandwidth, a shared host), scaled by how many of
        the other cores are in use. Ranks count as always busy: measured 3-stage runs on the 2-core machine
        slowed their layers by about 3/2 x `corun_slowdown`, although stage 0 waits a fifth of the time.
        """
        if self.cores <= 0 or self.threads_per_process <= 0:
            return 1.0
        threads = processes * self.threads_per_process
        share = max(1.0, threads / self.cores)
        others = self.cores - self.threads_per_process
        used = (min(threads, self.cores) - self.threads_per_process) / others if others > 0 else 0.0
        return share * (1.0 + (self.corun_slowdown - 1.0) * min(1.0, max(0.0, used)))

    def group_start_s(self, processes: int) -> float:
        """Rank 0's wait for a process group of `processes` ranks: the last rank's launch, then the rendezvous."""
        if processes <= 1:
            return 0.0
        return self.group_init_s + self.rank_start_s * (processes - 1)


def cluster_from_dict(data: dict[str, Any]) -> ClusterSpec:
    """Build a ClusterSpec from a plain dict with `device` and `link` sub-dicts."""
    dev, link = dict(data["device"]), dict(data["link"])
    top = {k: v for k, v in data.items() if k not in ("device", "link")}
    return ClusterSpec(device=DeviceSpec(**dev), link=LinkSpec(**link), **top)


def load_cluster(name_or_path: str) -> ClusterSpec:
    """Load `conf/cluster/<name>.yaml` (e.g. `8x4090`, `8xh100`, `cpu2`) or a YAML file path."""
    path = Path(name_or_path)
    if not path.suffix:
        found = [d / f"{name_or_path.lower()}.yaml" for d in CONF_DIRS]
        path = next((f for f in found if f.is_file()), path)
    if not path.is_file():
        known = sorted({p.stem for d in CONF_DIRS for p in d.glob("*.yaml")})
        raise ValueError(f"no cluster config {name_or_path!r}; known: {known}")
    from omegaconf import OmegaConf  # a hydra-core dependency; imported only when a file is read

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(data, dict)
    return cluster_from_dict(data)
