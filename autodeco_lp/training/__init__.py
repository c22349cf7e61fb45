"""Training AutoDeco heads: `fit(FitArgs(...))`, or `autodeco-fit` / `python -m autodeco_lp.training`."""

from autodeco_lp.training.args import FitArgs
from autodeco_lp.training.loop import FitResult
from autodeco_lp.training.loop import fit as fit_likelihood
from autodeco_lp.training.outcome import OutcomeResult, fit_outcome


def fit(args: FitArgs, command: str | None = None) -> FitResult | OutcomeResult:
    """Train heads with `args.objective`: the released likelihood objective or the outcome objective."""
    return (fit_outcome if args.objective == "outcome" else fit_likelihood)(args, command)


__all__ = ["FitArgs", "FitResult", "OutcomeResult", "fit", "fit_likelihood", "fit_outcome"]
