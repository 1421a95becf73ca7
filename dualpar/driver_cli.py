"""The `dualpar-driver` command: a Hydra app that runs a YAML list of render jobs on one Ray cluster.

    dualpar-driver jobs=jobs.yaml [ray.address=auto] [report=driver_report.json]

Every job is composed and validated before any starts (exit code 2 naming the job and key on a bad option);
the exit code is 0 when every job finished, 1 otherwise. See dualpar.driver for scheduling and restarts.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from dualpar.errors import ConfigError


def run(raw: dict[str, Any]) -> int:
    import ray

    from dualpar.driver import JobDriver, load_jobs

    jobs_file = Path(str(raw["jobs"])).expanduser()
    if not jobs_file.is_file():
        print(f"dualpar-driver: error: jobs: {jobs_file} is not a file. Fix: give jobs=<file.yaml>", file=sys.stderr)
        return 2
    try:
        jobs = load_jobs(jobs_file)
    except ConfigError as err:
        print(f"dualpar-driver: error: {err}", file=sys.stderr)
        return 2
    report = Path(raw["report"]) if raw.get("report") else jobs_file.with_name("driver_report.json")
    r = raw.get("ray") or {}
    started = not ray.is_initialized()
    if started and r.get("address") is None:
        from dualpar.launch.ray import start_local_cluster

        start_local_cluster(r.get("num_cpus"), r.get("num_gpus"))
    elif started:
        ray.init(address=r["address"])
    previous = signal.signal(signal.SIGTERM, _terminate)  # a stopped driver stops its jobs cleanly too
    try:
        driver = JobDriver(jobs, report, float(raw["poll_s"]), float(raw["status_every_s"]))
        code = driver.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if started:
            ray.shutdown()
    print(f"dualpar-driver: report {report}", file=sys.stderr)
    return code


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the driver checkpoints and stops running jobs, as on Ctrl-C


def main() -> None:
    import hydra
    from omegaconf import OmegaConf

    @hydra.main(version_base="1.3", config_path="pkg://dualpar.conf", config_name="driver")
    def _app(dcfg) -> None:
        try:
            raw = OmegaConf.to_container(dcfg, resolve=True, throw_on_missing=True)
        except Exception as err:  # a missing jobs= or a bad interpolation is a user error
            print(f"dualpar-driver: error: {err}. Fix: dualpar-driver jobs=<file.yaml>", file=sys.stderr)
            sys.exit(2)
        raw.pop("hydra", None)
        sys.exit(run(raw))

    _app()


if __name__ == "__main__":
    main()
