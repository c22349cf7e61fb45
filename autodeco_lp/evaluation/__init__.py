"""Evaluation: decoding methods compared on tasks with verifiers (`autodeco eval`)."""

from autodeco_lp.evaluation.passk import pass_at_k
from autodeco_lp.evaluation.runner import EvalArgs, run_eval

__all__ = ["EvalArgs", "pass_at_k", "run_eval"]
