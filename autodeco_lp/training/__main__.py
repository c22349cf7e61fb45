"""`python -m autodeco_lp.training ...` = `autodeco-fit ...` (what `accelerate launch -m` runs).

An entry point, not part of the training layer: it is what `-m` executes, nothing imports it
(`import autodeco_lp.training` never runs it), so calling up into the CLI from here creates no
dependency of training on the CLI. tests/test_layers.py ranks every `__main__.py` with the CLI
and checks that no module imports one. The option parsing stays in `cli/fit.py`, the one place
that knows click; training only receives a `FitArgs`.
"""

from autodeco_lp.cli.fit import main

main()
