"""AutoDeco for every Hugging Face causal LM: per-token temperature and top-p from two small heads.

Public API::

    from autodeco_lp import AutoDeco, AutoDecoHeads, AutoDecoConfig
"""

from autodeco_lp.hub.config import AutoDecoConfig
from autodeco_lp.inference.heads import AutoDecoHeads, TemperatureHead, TopPHead
from autodeco_lp.inference.processor import AutoDeco, AutoDecoLogitsProcessor, AutoDecoTrace
from autodeco_lp.version import __version__

__all__ = [
    "AutoDeco",
    "AutoDecoConfig",
    "AutoDecoHeads",
    "AutoDecoLogitsProcessor",
    "AutoDecoTrace",
    "TemperatureHead",
    "TopPHead",
    "__version__",
]
