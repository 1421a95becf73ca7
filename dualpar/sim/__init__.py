"""Performance model of dualpar: predict latency, idle time and memory before running on real GPUs.

Why it exists: GPU time is scarce, and the questions that decide a layout (how many stages, which block
size, which layer split, whether a job fits a 24 GB card, how far the bubble is from the paper's formula)
can be answered by replaying the engine's own block-queue plan with a cost model. Costs come from a FLOP
model of the Wan DiT on a described cluster (`conf/cluster/*.yaml`) or from a calibration on a real run's
report.json. Published baselines are small closed-form functions of the same inputs.

Entry points: `simulate`, `calibrate` / `predict_from_report`, `compare` (baselines), `sensitivity`,
`suggest`, and `tools/simulate.py` on the command line.
"""

from dualpar.sim.baselines import BaselineResult, compare
from dualpar.sim.calibrate import LayerTiming, calibrate, predict_breakdown, predict_from_report
from dualpar.sim.cluster import ClusterSpec, DeviceSpec, LinkSpec, load_cluster
from dualpar.sim.costs import CostModel, flop_costs
from dualpar.sim.explore import Suggestion, plan_warnings, sensitivity, suggest, sweep
from dualpar.sim.job import Job
from dualpar.sim.model import ModelSpec, from_diffusers_config, get_model
from dualpar.sim.simulate import SimResult, simulate
from dualpar.sim.trace import chrome_trace, report_from_sim

__all__ = [
    "BaselineResult",
    "ClusterSpec",
    "CostModel",
    "DeviceSpec",
    "Job",
    "LayerTiming",
    "LinkSpec",
    "ModelSpec",
    "SimResult",
    "Suggestion",
    "calibrate",
    "chrome_trace",
    "compare",
    "flop_costs",
    "from_diffusers_config",
    "get_model",
    "load_cluster",
    "plan_warnings",
    "predict_breakdown",
    "predict_from_report",
    "report_from_sim",
    "sensitivity",
    "simulate",
    "suggest",
    "sweep",
]
