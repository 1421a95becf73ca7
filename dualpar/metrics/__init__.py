"""Objective quality metrics for long toy-world videos, computed from frames alone (no pretrained network).

`evaluate(frames_FHW3, block_frame_starts, prompt)` returns a `QualityResult`: boundary flicker, object
persistence, trajectory smoothness and drift. `detect_objects` is the colour-blob detector underneath.
"""

from dualpar.metrics.longvideo import QualityResult, boundary_flicker, evaluate
from dualpar.metrics.objects import Blob, detect_objects, prompt_colours

__all__ = ["Blob", "QualityResult", "boundary_flicker", "detect_objects", "evaluate", "prompt_colours"]
