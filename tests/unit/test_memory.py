"""A render's memory must not grow with the number of blocks (nothing keeps all frames or latents)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, os, sys, psutil, torch
torch.set_num_threads(1)
from dualpar import progress
from dualpar.report import peak_rss_bytes
from dualpar.testing.jobs import render
samples = []
_done = progress.Progress.block_done
def block_done(self, frames):  # resident memory each time a block has been decoded and written
    _done(self, frames)
    samples.append(psutil.Process(os.getpid()).memory_info().rss)
progress.Progress.block_done = block_done
out = sys.argv[1]
common = ["height=256", "width=256", "schedule.steps=2", "output.latents=true", "output.preview=false"]
render(out + "/warm", ["frames=33", *common])  # 4 blocks: every code path and allocator pool warmed up
short_peak, short_samples = peak_rss_bytes(), list(samples)
samples.clear()
render(out + "/long", ["frames=301", *common])  # 38 blocks: 9x the frames
print(json.dumps({"short_peak": short_peak, "long_peak": peak_rss_bytes(), "short": short_samples, "long": samples}))
"""


def test_memory_flat_in_block_count(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr
    rss = json.loads(proc.stdout.strip().splitlines()[-1])
    mib = 2**20
    long = rss["long"]
    assert len(long) == 38
    # Keeping the long video's frames would add 301*256*256*3 B = 59 MiB (237 MiB as decoded float32) and
    # grow steadily; resident memory after each block must instead stay level.
    first, last = long[: len(long) // 4], long[-(len(long) // 4):]
    # (a uint8 frame leak would raise the last quarter's mean by ~44 MiB over the first's; allocator noise is
    # +-40 MiB per sample but does not trend)
    assert sum(last) / len(last) - sum(first) / len(first) < 25 * mib, (first, last)
    assert rss["long_peak"] - rss["short_peak"] < 80 * mib, rss
