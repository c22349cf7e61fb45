"""Training AutoDeco heads: `fit(FitArgs(...))`, or `autodeco-fit` / `python -m autodeco_lp.training`."""

from autodeco_lp.training.args import FitArgs
from autodeco_lp.training.loop import FitResult, fit

__all__ = ["FitArgs", "FitResult", "fit"]
