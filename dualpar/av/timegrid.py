"""One exact clock for video latents, audio latents and output samples (AUDIO_VIDEO.md section 1).

Which audio latents belong to which frame block, where RoPE places an audio token and which output samples a
block writes are all answered here, in `Fraction` arithmetic, so hours of video at 30000/1001 fps never drift.
Every rounding goes through `math.ceil` on an exact Fraction: one rule everywhere, never Python's `round`
(which rounds half to even) and never a float.

Symbols: F frame rate, s video VAE temporal stride, sr sample rate, h codec hop (samples per audio latent),
A = s*sr/(F*h) audio latents per video latent, P/C block and context latents (`BlockGeometry`).

- Video latent i spans [i*s/F - lead, (i+1)*s/F - lead) seconds. With a causal first frame (Wan) lead =
  (s-1)/F: latent 0 gets a virtual lead-in of s-1 frames before frame 0, so every latent owns the same time.
- Audio latent j spans [j*h/sr - lead, (j+1)*h/sr - lead); it belongs to the video latent holding its centre.
  Aligned mode (A an integer): latent i owns audio latents [i*A, (i+1)*A). Padded mode: counts vary by one,
  and windows pad their audio to a static number of slots (`slots`).
- Output sample m is at time m/sr; the codec's sample c is at c/sr - lead, so m reads codec sample
  m + floor(lead*sr) (exact whenever lead*sr is an integer, otherwise at most one sample early).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from dualpar.schedule.blockwise import BlockGeometry

HALF = Fraction(1, 2)


def as_fraction(value: Fraction | int | str | float) -> Fraction:
    """Exact Fraction from an int, a Fraction or a string like "30000/1001" (floats only if exactly binary)."""
    if isinstance(value, float):
        frac = Fraction(value)
        if frac.denominator > 1_000_000:
            raise ValueError(f"frame rate {value!r} is not exact; pass a string such as '30000/1001'")
        return frac
    return Fraction(value)


@dataclass(frozen=True)
class TimeGrid:
    """The shared clock of one job: frame rate, video stride and the audio codec's rate and hop."""

    fps: Fraction
    sample_rate: int
    hop: int
    stride: int = 4
    causal_first_frame: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "fps", as_fraction(self.fps))
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        for name in ("sample_rate", "hop", "stride"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    # --- rates -------------------------------------------------------------------------------------------
    def audio_per_latent(self) -> Fraction:
        """A: audio latents per video latent."""
        return Fraction(self.stride * self.sample_rate) / (self.fps * self.hop)

    @property
    def aligned(self) -> bool:
        """True when every video latent owns exactly A (an integer) audio latents."""
        return self.audio_per_latent().denominator == 1

    @property
    def lead_frames(self) -> int:
        """Frames generated before frame 0: s-1 for a causal first frame, else none."""
        return self.stride - 1 if self.causal_first_frame else 0

    def lead_in(self) -> Fraction:
        """Seconds generated before frame 0."""
        return self.lead_frames / self.fps

    def codec_offset(self) -> int:
        """Codec samples dropped at the start: output sample m reads codec sample m + codec_offset()."""
        return math.floor(self.lead_in() * self.sample_rate)

    # --- spans -------------------------------------------------------------------------------------------
    def latent_span(self, i: int) -> tuple[Fraction, Fraction]:
        """[t0, t1) seconds of video latent i (latent 0 includes the lead-in)."""
        d = Fraction(self.stride) / self.fps
        return i * d - self.lead_in(), (i + 1) * d - self.lead_in()

    def audio_span(self, j: int) -> tuple[Fraction, Fraction]:
        """[t0, t1) seconds of audio latent j."""
        d = Fraction(self.hop, self.sample_rate)
        return j * d - self.lead_in(), (j + 1) * d - self.lead_in()

    def samples(self, t0: Fraction, t1: Fraction) -> tuple[int, int]:
        """Output samples [ceil(t0*sr), ceil(t1*sr)) of the span [t0, t1), clipped at time 0."""
        return math.ceil(max(t0, 0) * self.sample_rate), math.ceil(max(t1, 0) * self.sample_rate)

    def total_samples(self, frames: int) -> int:
        """Length of the track for `frames` pixel frames: ceil(frames * sr / F)."""
        return self._sample_at_frame(frames)

    def _sample_at_frame(self, x: int) -> int:
        """ceil(max(x, 0) / F * sr) in integers: the first output sample at or after frame boundary x."""
        num = max(x, 0) * self.sample_rate * self.fps.denominator
        return -(-num // self.fps.numerator)

    # --- ownership ---------------------------------------------------------------------------------------
    def audio_of_latents(self, a: int, b: int) -> range:
        """Audio latents whose centre lies in video latents [a, b): [ceil(a*A - 1/2), ceil(b*A - 1/2))."""
        big_a = self.audio_per_latent()
        return range(math.ceil(a * big_a - HALF), math.ceil(b * big_a - HALF))

    def slots(self, n_latents: int) -> int:
        """Static audio slots for any n_latents consecutive video latents (the most they can own)."""
        return math.ceil(n_latents * self.audio_per_latent())

    def block_audio_latents(self, block: int, geometry: BlockGeometry) -> range:
        """Audio latents that `block` owns (aligned: [a*A, b*A) for its own latents [a, b))."""
        own = geometry.own_range(block)
        return self.audio_of_latents(own.start, own.stop)

    def window_audio_latents(self, block: int, geometry: BlockGeometry) -> range:
        """Audio latents of `block`'s window: its left context's audio followed by its own."""
        win = geometry.window_range(block)
        return self.audio_of_latents(win.start, win.stop)

    def cached_audio_latents(self, block: int, geometry: BlockGeometry) -> range:
        """Audio latents of `block`'s first C own latents: what its pass leaves in the feature cache."""
        start = geometry.own_range(block).start
        return self.audio_of_latents(start, start + geometry.context_latents)

    def block_samples(self, block: int, geometry: BlockGeometry, total_frames: int) -> tuple[int, int]:
        """Output samples [s0, s1) that `block` writes; blocks tile [0, total_samples(total_frames))."""
        own = geometry.own_range(block)  # latent i starts at frame boundary i*s - lead_frames
        s0 = self._sample_at_frame(own.start * self.stride - self.lead_frames)
        s1 = self._sample_at_frame(own.stop * self.stride - self.lead_frames)
        total = self.total_samples(total_frames)
        return min(s0, total), min(s1, total)

    # --- RoPE clock (section 4) --------------------------------------------------------------------------
    def rope_time(self, t: Fraction) -> Fraction:
        """Latent-frame units for a token whose span centre is t: video latent i -> i."""
        return (t + self.lead_in()) * self.fps / self.stride - HALF

    def video_position(self, i: int) -> Fraction:
        return Fraction(i)

    def audio_position(self, j: int) -> Fraction:
        """(j + 1/2)/A - 1/2, equal to rope_time(centre of audio latent j)."""
        return (j + HALF) / self.audio_per_latent() - HALF


def grid_for_codec(fps: Fraction | int | str, codec: object, stride: int = 4,
                   causal_first_frame: bool = True) -> TimeGrid:
    """The TimeGrid of a video stride and an audio codec exposing `sample_rate` and `hop`."""
    return TimeGrid(fps=as_fraction(fps), sample_rate=int(codec.sample_rate), hop=int(codec.hop),  # type: ignore[attr-defined]
                    stride=stride, causal_first_frame=causal_first_frame)
