"""The backbone adapter: what the runner, the audio tower and the planner need from a video DiT, defined once.

A pipeline stage drives a diffusers transformer from outside, as separate pieces, so that a stage can hold a
slice of the layers and only hidden states travel (docs/algorithm.md, "Dataflow across stages"). Every
backbone (today Wan2.1 and Wan2.2 A14B through `dualpar.models.wan.WanStage`) provides these pieces; the
runner (`dualpar.runner.StageRunner`), the `av` runner (`dualpar.av_runner`) and the loader program against
this Protocol, not against Wan's classes.

- conditions: the per-token (per-row) timestep and text conditioning, recomputed on every stage;
- embed (first stage) and head (last stage);
- a layer slice (`layer_ids`, `layer_blocks`, `run_layers`);
- per-layer self-attention with the feature cache: `install_attention` routes every self-attention through a
  processor that appends the cached right-context K/V (raw, before K-norm and RoPE) at window-local
  positions P+C .. P+2C-1 (`rope_tables` covers them), `pass_context` tells it what one pass does, and
  `reset_cache` empties the cache when an iteration opens.

A backbone trained on one noise level per latent frame (SkyReels-V2 diffusion forcing,
`dualpar.models.skyreels.SkyReelsStage`) extends this with `FrameLevelStage.frame_conditions`: the runner then
gives every window frame its own block's timestep (the left context's frames carry block k-1's level) and
the job's fps, instead of one timestep per row.

Legend: B batch rows, S window tokens, D width, C_lat latent channels, F latent frames, h/w latent grid.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from dualpar.attention.base import AttentionBackend, AttnCall


@dataclass
class PassContext:
    """What one block pass tells every self-attention layer of a stage (set before the layers run)."""

    rope_q: tuple[torch.Tensor, torch.Tensor]  # cos/sin for the window's queries [1, S, 1, E]
    rope_k: tuple[torch.Tensor, torch.Tensor]  # cos/sin for keys incl. cached frames [1, K, 1, E]
    use_cache: bool  # append the cached right-neighbour K/V
    capture: slice | None  # token rows whose raw K/V become the cache for the next pass
    call: AttnCall  # plan coordinates for the attention backend (layer filled per processor)
    cache_key: str = "cond+uncond"  # one cache per micro-batch kind (cfg_split keeps cond and uncond apart)


@runtime_checkable
class BackboneStage(Protocol):
    """One contiguous slice of a DiT's layers plus the shared parts its pipeline role needs."""

    layer_ids: range
    first: bool  # holds the patch embedding
    last: bool  # holds the output head
    processors: list[Any]  # the installed cached self-attention processors, in layer order

    def owned_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of the full checkpoint this stage materialises."""
        ...

    def install_attention(self, make_backend: Callable[[int], AttentionBackend]) -> None:
        """Route every self-attention of the slice through the cached processor with `make_backend(layer)`."""
        ...

    def reset_cache(self) -> None:
        """Forget every cached K/V (the tail opens an iteration)."""
        ...

    def rope_tables(self, frames: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE cos/sin (fp32) for `frames` x h x w latents at window-local positions from 0."""
        ...

    def conditions(self, timestep_B: torch.Tensor, text_BLD: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(temb, timestep projection, projected text) for rows with timesteps `timestep_B`."""
        ...

    def embed(self, x_BCFHW: torch.Tensor) -> torch.Tensor:
        """Patch embedding of window latents -> [B, S, D] (first stage)."""
        ...

    def run_layers(
        self, hidden_BSD: torch.Tensor, text_proj: torch.Tensor, timestep_proj: torch.Tensor, ctx: PassContext
    ):
        """The slice's layers over one pass's hidden states, with the pass context `ctx` set."""
        ...

    def pass_context(self, ctx: PassContext) -> AbstractContextManager[None]:
        """Every self-attention processor sees `ctx` for one pass (also when layers are driven from outside)."""
        ...

    def layer_blocks(self) -> list[nn.Module]:
        """The slice's transformer blocks in layer order."""
        ...

    def head(self, hidden_BSD: torch.Tensor, temb: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Output norm, projection and unpatchify -> [B, C_lat, F, h, w] (last stage)."""
        ...


@runtime_checkable
class FrameLevelStage(BackboneStage, Protocol):
    """A backbone conditioned per latent frame (diffusion forcing): the staggered block queue gives a window's
    left context and own frames different noise levels, and this backbone is told each frame's level."""

    frame_levels: bool  # True: the runner calls frame_conditions, never conditions

    def frame_conditions(
        self, timestep_BF: torch.Tensor, text_BLD: torch.Tensor, fps: int, tokens_per_frame: int
    ) -> tuple[torch.Tensor, ...]:
        """(temb, timestep projection, projected text) per token for rows whose F window frames have the noise
        levels `timestep_BF`; `fps` is the job's frame rate (sample-info embedding)."""
        ...
