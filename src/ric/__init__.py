"""ric: multi-objective alignment of foundation models with Rewards-in-Context (arXiv 2402.10207).

The top level re-exports the pure math of ``ric.core``; scorers live in ``ric.rewards`` and data
labeling in ``ric.data``.
"""

from ric.core import *  # noqa: F403 - the pure math is the top-level API
from ric.core import __all__ as _core_api

__version__ = "0.1.0"
__all__ = [*_core_api, "__version__"]
