"""Predict a long-video job's latency, idle time and memory with the dualpar performance model.

Usage:
  python tools/simulate.py --model wan2.1-t2v-1.3b --height 480 --width 832 --frames 1025 --steps 50 \
      --cluster 8x4090 --stages 8 --block-latents 8 --context-latents 8 [--split even|cost_aware|3,4,...] \
      [--cfg-split] [--sweep] [--suggest] [--baselines] [--json out.json] [--trace trace.json]
  python tools/simulate.py --model toyworld --height 32 --width 32 --frames 256 --cluster cpu2 ...
  python tools/simulate.py --model-path /models/Wan2.1-T2V-1.3B-Diffusers --cluster 8xh100 ...

--model takes the names of `dualpar model=` (wan2.1-t2v-1.3b, wan2.1-t2v-14b, toyworld, tiny, small);
--model-path reads any diffusers Wan directory's configs (and its text encoder's and VAE's sizes).
  python tools/simulate.py --headline docs/results/simulated.json
  python tools/simulate.py --calibrate report.json --stages 2 --cluster cpu2
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dualpar.sim.baselines import compare  # noqa: E402
from dualpar.sim.calibrate import calibrate, predict_breakdown  # noqa: E402
from dualpar.sim.cluster import GIB, load_cluster  # noqa: E402
from dualpar.sim.explore import plan_warnings, sensitivity, suggest  # noqa: E402
from dualpar.sim.job import DECODE_POLICIES, Job  # noqa: E402
from dualpar.sim.model import PRESETS, from_model_info, get_model  # noqa: E402
from dualpar.sim.predictions import headline  # noqa: E402
from dualpar.sim.simulate import simulate  # noqa: E402
from dualpar.sim.trace import chrome_trace  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wan2.1-t2v-1.3b", help="a `dualpar model=` preset name")
    p.add_argument("--model-path", help="a local diffusers Wan directory (as model.path)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--frames", type=int, default=1025)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cluster", default="8x4090", help="conf/cluster/<name>.yaml or a YAML path")
    p.add_argument("--stages", type=int, default=8)
    p.add_argument("--block-latents", type=int, default=8)
    p.add_argument("--context-latents", type=int, default=8)
    p.add_argument("--split", default="even", help="even | cost_aware | comma-separated layer counts")
    p.add_argument("--cfg-split", action="store_true")
    p.add_argument("--left-context", default="ahead", choices=["ahead", "same"])
    p.add_argument("--decode-at", default="retire", choices=list(DECODE_POLICIES))
    p.add_argument("--no-head-wait", action="store_true", help="do not wait for the finished head block")
    p.add_argument("--checkpoint-every", type=int, default=0, help="iterations between checkpoints (0: none)")
    p.add_argument("--max-inflight", type=int, default=2)
    p.add_argument("--text-encoder-on-host", action="store_true", help="encode the prompt on the CPU")
    p.add_argument("--sweep", action="store_true", help="sensitivity sweeps")
    p.add_argument("--suggest", action="store_true", help="fastest layout that fits memory")
    p.add_argument("--baselines", action="store_true", help="compare with published methods")
    p.add_argument("--json", help="write the result here")
    p.add_argument("--trace", help="write a Chrome trace of the replay here")
    p.add_argument("--headline", help="regenerate the headline predictions JSON at this path")
    p.add_argument("--calibrate", help="report.json of a real run: predict it at --stages")
    return p.parse_args(argv)


def build_job(a: argparse.Namespace) -> Job:
    split: str | tuple[int, ...] = a.split
    if a.split not in ("even", "cost_aware"):
        split = tuple(int(x) for x in a.split.split(","))
    return Job(
        height=a.height,
        width=a.width,
        frames=a.frames,
        steps=a.steps,
        block_latents=a.block_latents,
        context_latents=a.context_latents,
        left_context=a.left_context,
        stages=a.stages,
        split=split,
        cfg_split=a.cfg_split,
        max_inflight=a.max_inflight,
        decode_at=a.decode_at,
        head_wait=not a.no_head_wait,
        checkpoint_every=a.checkpoint_every,
        text_encoder_on_device=not a.text_encoder_on_host,
    )


def build_model(a: argparse.Namespace):
    """The same model names (and checkpoint directories) as `dualpar model=... model.path=...`."""
    if a.model_path is None and a.model in PRESETS:
        return get_model(a.model)
    from dualpar.errors import ConfigError
    from dualpar.models.registry import read_model_info

    try:
        return from_model_info(read_model_info(a.model, a.model_path, plan_only=True))
    except ConfigError as err:
        raise SystemExit(f"simulate: {err}") from None


def run(a: argparse.Namespace) -> dict:
    if a.headline:
        return headline()
    cluster = load_cluster(a.cluster)
    if a.calibrate:
        return {
            "calibration": asdict(calibrate(a.calibrate)),
            **predict_breakdown(a.calibrate, a.stages, cluster),
        }
    model, job = build_model(a), build_job(a)
    result = simulate(job, model, cluster, record=bool(a.trace))
    out: dict = {
        "result": result.summary(),
        "memory_gib": [m.as_gib() for m in result.memory],
        "costs": asdict(result.costs),
        "warnings": plan_warnings(job),
    }
    if a.trace:
        Path(a.trace).write_text(json.dumps(chrome_trace(result)))
    if a.baselines:
        out["baselines"] = [
            {**asdict(r), "memory_per_gpu_gib": round(r.memory_per_gpu / GIB, 3)} for r in compare(model, job, cluster)
        ]
    if a.sweep:
        out["sweeps"] = sensitivity(job, model, cluster)
    if a.suggest:
        out["suggestion"] = asdict(suggest(job, cluster, model))
    return out


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = run(a)
    path = a.headline or a.json
    if path:
        Path(path).write_text(json.dumps(out, indent=1) + "\n")
    res = out.get("result")
    if res:
        print(
            f"latency {res['latency_s']:.1f} s, idle {res['idle_fraction_mean']:.3f}, "
            f"peak memory {res['peak_memory_gib']:.2f} GiB (fits: {res['fits']}), split {res['split']}"
        )
        for w in out["warnings"]:
            print("warning:", w)
        for b in out.get("baselines", []):
            print(
                f"  {b['method']:20s} {b['latency_s']:10.1f} s {b['memory_per_gpu_gib']:8.2f} GiB "
                f"idle {b['idle_fraction']:.3f} fits {b['fits']}"
            )
        if "suggestion" in out:
            print("suggestion:", out["suggestion"])
    elif not path:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
