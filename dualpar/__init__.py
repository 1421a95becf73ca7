"""dualpar: long-video rendering from video diffusion transformers with dual parallelism.

Every worker owns a contiguous shard of the DiT's layers (layer parallelism) while the video is cut into
frame blocks that flow through the workers at staggered noise levels (block parallelism). Importing this
package needs only torch; heavy or optional dependencies are imported where they are used, and
`dualpar.render` (the Python API, `dualpar.api`) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from dualpar.api import RenderResult, render

__all__ = ["RenderResult", "__version__", "render"]


def __getattr__(name: str) -> Any:
    if name in ("render", "RenderResult"):
        from dualpar import api

        return getattr(api, name)
    raise AttributeError(f"module 'dualpar' has no attribute {name!r}")
