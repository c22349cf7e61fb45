"""`python -m autodeco_lp.training ...` = `autodeco-fit ...` (what `accelerate launch -m` runs)."""

from autodeco_lp.cli.fit import main

main()
