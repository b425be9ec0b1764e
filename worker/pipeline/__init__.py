"""A destination's pipeline (``loop.py``) and its stages, one module each, in flow order:
``intake`` → ``batches`` → ``dispatch`` → ``dead_letters`` → ``commit``."""

from worker.pipeline.common import PipelineStats
from worker.pipeline.loop import DestinationPipeline

__all__ = ["DestinationPipeline", "PipelineStats"]
