#!/usr/bin/env bash
# Start dualpar under torchrun: one process per GPU, one pipeline stage per process.
#
# One 8-GPU node:
#   bash launch/torchrun.sh single model.path=/models/Wan2.1-T2V-1.3B-Diffusers prompt="..." frames=1025
# Two 8-GPU nodes: the same command on each node (MASTER_ADDR: a node both reach, hosting the rendezvous):
#   MASTER_ADDR=10.0.0.1 bash launch/torchrun.sh multi model.path=/shared/models/Wan2.1-T2V-14B-Diffusers \
#     output.dir=/shared/renders/cat prompt="..." frames=1025
#   c10d numbers the nodes itself (by address; --node-rank is ignored): stages 0-7 run on one node, 8-15 on
#   the other, so only the hop from stage 7 to stage 8 crosses the network. RDZV_ID names the job (default dualpar); two jobs at once need two ids.
#   TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives each restart attempt a fresh store: torchrun counts restarts per
#   node, and on a shared store a restarted group would read the dead group's addresses (pytorch#135712).
# Video with a soundtrack (job=av; the audio tower is sharded with the video layers, the AAC track is muxed):
#   bash launch/torchrun.sh single model.path=... job=av audio.codec=oobleck \
#     audio.codec_path=/models/stable-audio-open-1.0 audio.codec_subfolder=vae \
#     audio.init=checkpoint audio.checkpoint=/models/audio-tower prompt="..." frames=1025
# Every stage reads only its own layers from model.path: the model directory must be on every node (shared
# filesystem or a copy at the same path). Stage 0 writes the outputs and the checkpoints, and any node may hold
# stage 0 after a restart: output.dir (and checkpoint.dir, inside it by default) must be shared storage.
# With checkpoint.every > 0 and resume=auto, torchrun's --max-restarts resumes a crashed job from its last
# checkpoint in the same output.dir. resume=auto is passed on purpose: a node whose own ranks did not fail
# restarts them without counting a restart, so stage 0 cannot tell a restart from a first start.
set -euo pipefail
mode=${1:-single}; shift || true
case "$mode" in
  single)
    exec torchrun --standalone --nproc-per-node 8 --max-restarts 2 -m dualpar.cli \
      model=wan2.1-t2v-1.3b launcher=torchrun parallel.stages=8 checkpoint.every=10 resume=auto "$@" ;;
  multi)
    export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
    exec torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-id "${RDZV_ID:-dualpar}" \
      --rdzv-endpoint "${MASTER_ADDR:?}:${MASTER_PORT:-29500}" --max-restarts 2 \
      -m dualpar.cli model=wan2.1-t2v-14b launcher=torchrun parallel.stages=16 checkpoint.every=10 resume=auto "$@" ;;
  *) echo "usage: $0 single|multi [dualpar overrides...]" >&2; exit 2 ;;
esac
