"""Where rendered frames, audio and latents go: streaming, crash-safe writers with flat memory.

Frames arrive one block at a time for videos of thousands of frames, so every sink here writes as blocks come
and never holds the whole video. Names are imported lazily so `import dualpar.sinks` does not load PyAV.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AudioSpec": "dualpar.sinks.mp4",
    "Mp4SegmentSink": "dualpar.sinks.mp4",
    "PreviewCollector": "dualpar.sinks.preview",
    "LatentsWriter": "dualpar.sinks.latents",
    "VideoInfo": "dualpar.sinks.probe",
    "probe_video": "dualpar.sinks.probe",
    "read_frames": "dualpar.sinks.probe",
    "WavWriter": "dualpar.sinks.wav",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dualpar.sinks' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
