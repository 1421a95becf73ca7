"""dualpar: long-video rendering from video diffusion transformers with dual parallelism.

Every worker owns a contiguous shard of the DiT's layers (layer parallelism) while the video is cut into
frame blocks that flow through the workers at staggered noise levels (block parallelism). Importing this
package needs only torch; heavy or optional dependencies are imported where they are used.
"""

__version__ = "0.1.0"
