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
    """A stage-to-stage hop: effective bandwidth per direction, per-message latency, P2P or host-staged."""

    bandwidth_gbs: float
    latency_us: float
    p2p: bool

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

    def compute_slowdown(self, processes: int) -> float:
        """CPU oversubscription: N processes x threads on fewer cores run proportionally slower."""
        if self.cores <= 0 or self.threads_per_process <= 0:
            return 1.0
        return max(1.0, processes * self.threads_per_process / self.cores)


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
