"""Collection of the docstring examples in autodeco_lp/ (`--doctest-modules`, pyproject.toml).

Modules that need an optional dependency at import time are left out while it is not installed:
`autodeco_lp/vllm/` imports vLLM (its tests skip the same way). Every other module imports its
optional dependencies where they are used, so its examples always run.
"""

from __future__ import annotations

import importlib.util

import pytest

collect_ignore: list[str] = []
if importlib.util.find_spec("vllm") is None:
    collect_ignore.append("autodeco_lp/vllm")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Until `AutoDeco`'s example in autodeco_lp/inference/processor.py is rewritten to run offline
    # (issue 15; that file is being changed elsewhere), it names a heads folder that does not
    # exist and cannot run: skip it while it still does, so the rewritten one runs as soon as it lands.
    for item in items:
        test = getattr(item, "dtest", None)
        if test is not None and test.name.endswith("processor.AutoDeco") and "path/to/heads" in test.docstring:
            item.add_marker(pytest.mark.skip(reason="AutoDeco example still needs a heads folder (issue 15)"))
