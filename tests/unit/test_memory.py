"""A render's peak memory must not grow with the number of blocks (nothing keeps all frames or latents)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, sys, torch
torch.set_num_threads(1)
from dualpar.report import peak_rss_bytes
from dualpar.testing.jobs import render
out = sys.argv[1]
common = ["height=256", "width=256", "schedule.steps=2", "output.latents=true", "output.preview=false"]
render(out + "/warm", ["frames=33", *common])  # 4 blocks: every code path and allocator pool warmed up
short = peak_rss_bytes()
render(out + "/long", ["frames=201", *common])  # 25 blocks: 6x the frames
print(json.dumps({"short": short, "long": peak_rss_bytes()}))
"""


def test_peak_memory_flat_in_block_count(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    rss = json.loads(proc.stdout.strip().splitlines()[-1])
    # Keeping the long video's frames alone would add 201*256*256*3 B = 40 MB (float32 decoded: 160 MB).
    assert rss["long"] - rss["short"] < 12 * 2**20, rss
