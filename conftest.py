"""Collection of the docstring examples in autodeco_lp/ (`--doctest-modules`, pyproject.toml).

Modules that need an optional dependency at import time are left out while it is not installed:
`autodeco_lp/vllm/` imports vLLM (its tests skip the same way locally; under CI=true they fail).
Every other module imports its optional dependencies where they are used, so its examples always run.
"""

from __future__ import annotations

import importlib.util

collect_ignore: list[str] = []
if importlib.util.find_spec("vllm") is None:
    collect_ignore.append("autodeco_lp/vllm")
