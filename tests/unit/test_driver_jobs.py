"""A driver jobs file is checked whole before any job starts: bad YAML, unknown keys, duplicate names or output
directories, an unknown model and bad values all exit 2 naming the job and the key, with the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dualpar.driver import load_jobs
from dualpar.errors import ConfigError

CASES = {
    "bad_yaml": ("- {name: a, frames: 9\n", "is not valid YAML at line 2", "jobs"),
    "unknown_key": ("- {name: a, framez: 9}\n", "did you mean frames?", "jobs[0] (a): framez"),
    "duplicate_name": ("- {name: a}\n- {name: a, seed: 1}\n", "also the name of jobs[0]", "jobs[1] (a): name"),
    "unknown_model": ("- {name: m, model: nosuch}\n", "has no option 'nosuch'", "jobs[0] (m): model"),
    "bad_value": ("- {name: v, frames: abc}\n", "not an integer", "jobs[0] (v): frames"),
    "not_a_list": ("frames: 9\n", "holds no list of jobs", "jobs"),
    "not_a_mapping": ("- 17\n", "give each job as a mapping", "jobs[0]"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_jobs_files_name_the_job_and_key(tmp_path, case):
    text, problem, key = CASES[case]
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_jobs(path)
    assert err.value.key == key
    assert problem in str(err.value)


def test_duplicate_output_dirs_are_refused(tmp_path):
    out = tmp_path / "same"
    path = tmp_path / "jobs.yaml"
    path.write_text(
        f"- {{name: a, model: tiny, output.dir: {out}}}\n- {{name: b, model: tiny, output: {{dir: {out}}}}}\n"
    )
    with pytest.raises(ConfigError, match="is also used by a"):
        load_jobs(path)


def test_dotted_and_nested_keys_and_prompt_timelines_compose(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "- name: t\n  model: tiny\n  frames: 9\n  schedule.steps: 2\n  output: {dir: " + str(tmp_path / "o") + "}\n"
        "  prompt: [{frame: 0, text: 'a red ball, moving right'}, {frame: 4, text: a blue ball}]\n"
    )
    [(name, cfg)] = load_jobs(path)
    assert name == "t" and cfg.launcher == "ray" and cfg.schedule.steps == 2 and cfg.frames == 9
    assert [(p.frame, p.text) for p in cfg.prompt] == [(0, "a red ball, moving right"), (4, "a blue ball")]


def test_driver_command_exits_2_before_starting_ray(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text("- {name: a, framez: 9}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dualpar.driver_cli", f"jobs={path}"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "jobs[0] (a): framez: is not a known option" in proc.stderr
    assert "Traceback" not in proc.stderr and "Started a local Ray" not in proc.stderr
