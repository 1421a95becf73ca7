"""The soundtrack of one job as a stream: block latents in, output-clock PCM out (AUDIO_VIDEO.md section 6).

Finished blocks hand their own audio latents here in order; the codec's stream decoder turns them into codec
samples (one block late for a codec with lookahead), the lead-in before frame 0 is trimmed, and the track is
clipped at ceil(N*sr/F) for the N frames asked for. The sink writes whatever `push` returns beside the block's
frames, so memory stays independent of the video's length. In aligned mode with a causal codec (the tiny one)
block k's `push` returns exactly `TimeGrid.block_samples(k)`.

Legend: B batch, K audio channels, S samples.
"""

from __future__ import annotations

import torch

from dualpar.av.codec import AudioCodec
from dualpar.av.timegrid import TimeGrid


class AudioTrack:
    """Streaming decode + lead-in trim + end clip for one track of `total_frames` video frames."""

    def __init__(self, codec: AudioCodec, grid: TimeGrid, total_frames: int) -> None:
        if codec.sample_rate != grid.sample_rate or codec.hop != grid.hop:
            raise ValueError(f"codec (sr {codec.sample_rate}, hop {codec.hop}) does not match the time grid "
                             f"(sr {grid.sample_rate}, hop {grid.hop})")
        self.decoder = codec.stream_decoder()
        self.skip = grid.codec_offset()
        self.total = grid.total_samples(total_frames)
        self.codec_samples = 0  # codec samples received from the decoder
        self.samples_out = 0  # output samples returned

    def push(self, z_BCN: torch.Tensor) -> torch.Tensor:
        """A block's own audio latents (in order); returns the output samples that became final [B, K, S]."""
        return self._map(self.decoder.decode(z_BCN))

    def flush(self) -> torch.Tensor:
        """The rest of the track, up to `total` samples."""
        return self._map(self.decoder.flush())

    def _map(self, wav_BKS: torch.Tensor) -> torch.Tensor:
        first = self.codec_samples
        self.codec_samples += wav_BKS.shape[2]
        drop = max(0, self.skip - first)  # codec samples before output sample 0 (the lead-in)
        out = wav_BKS[:, :, drop:]
        out = out[:, :, :max(0, self.total - self.samples_out)]
        self.samples_out += out.shape[2]
        return out

    @property
    def done(self) -> bool:
        return self.samples_out >= self.total

    def state_dict(self) -> dict:
        return {"decoder": self.decoder.state_dict(), "codec_samples": self.codec_samples,
                "samples_out": self.samples_out}

    def load_state_dict(self, state: dict) -> None:
        self.decoder.load_state_dict(state["decoder"])
        self.codec_samples, self.samples_out = state["codec_samples"], state["samples_out"]
