"""Evaluation: decoding methods compared on tasks with verifiers (`autodeco eval`)."""

from autodeco_lp.evaluation.args import EvalArgs
from autodeco_lp.evaluation.passk import pass_at_k
from autodeco_lp.evaluation.runner import run_eval

__all__ = ["EvalArgs", "pass_at_k", "run_eval"]
