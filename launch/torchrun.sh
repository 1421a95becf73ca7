#!/usr/bin/env bash
# Start dualpar under torchrun: one process per GPU, one pipeline stage per process.
#
# One 8-GPU node:
#   bash launch/torchrun.sh single model.path=/models/Wan2.1-T2V-1.3B-Diffusers prompt="..." frames=1025
# Two 8-GPU nodes (run on each node; NODE_RANK=0 on the first, 1 on the second; MASTER_ADDR = first node):
#   NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash launch/torchrun.sh multi model.path=... frames=1025
# Video with a soundtrack (job=av; the audio tower is sharded with the video layers, the AAC track is muxed):
#   bash launch/torchrun.sh single model.path=... job=av audio.codec=oobleck \
#     audio.codec_path=/models/stable-audio-open-1.0 audio.codec_subfolder=vae \
#     audio.init=checkpoint audio.checkpoint=/models/audio-tower prompt="..." frames=1025
# Every stage reads only its own layers from model.path, so the checkpoint directory must be visible on
# every node (shared filesystem or a copy). Outputs are written by rank 0 (stage 0) on the first node.
# With checkpoint.every > 0 and resume=auto, torchrun's --max-restarts resumes a crashed job from its last
# checkpoint in the same output.dir.
set -euo pipefail
mode=${1:-single}; shift || true
case "$mode" in
  single)
    exec torchrun --standalone --nproc-per-node 8 --max-restarts 2 -m dualpar.cli \
      model=wan2.1-t2v-1.3b launcher=torchrun parallel.stages=8 checkpoint.every=10 resume=auto "$@" ;;
  multi)
    exec torchrun --nnodes 2 --nproc-per-node 8 --node-rank "${NODE_RANK:?}" \
      --rdzv-backend c10d --rdzv-endpoint "${MASTER_ADDR:?}:${MASTER_PORT:-29500}" --max-restarts 2 \
      -m dualpar.cli model=wan2.1-t2v-14b launcher=torchrun parallel.stages=16 checkpoint.every=10 resume=auto "$@" ;;
  *) echo "usage: $0 single|multi [dualpar overrides...]" >&2; exit 2 ;;
esac
