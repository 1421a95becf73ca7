"""tools/quality.py end to end: mp4 in (PyAV), block starts from a report, JSON out."""

import importlib.util
import json
from pathlib import Path

from dualpar.toyworld.world import make_clip

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("quality_tool", ROOT / "tools" / "quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quality_tool_on_ground_truth_mp4(tmp_path):
    tool = _tool()
    video, caption, _ = make_clip(2, 96)
    tool.write_video(tmp_path / "v.mp4", video)
    back = tool.read_video(tmp_path / "v.mp4")
    assert back.shape == video.shape
    report = {"block_frame_starts": [0, 16, 24, 32, 40], "prompt": caption}
    (tmp_path / "report.json").write_text(json.dumps(report))
    out = tmp_path / "result.json"
    tool.main(["--video", str(tmp_path / "v.mp4"), "--report", str(tmp_path / "report.json"),
               "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["prompt"] == caption and r["frames"] == 96 and r["block_frame_starts"] == [0, 16, 24, 32, 40]
    assert r["persistence"] >= 0.95 and 0.8 < r["boundary_flicker"] < 1.25 and r["jump_rate"] <= 0.03
