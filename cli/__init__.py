"""The `autodeco` command line (installed as `autodeco_lp.cli`): click parsing only."""
