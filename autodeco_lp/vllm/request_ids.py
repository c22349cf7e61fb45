"""The request ids of the rows being sampled, for the opt-in trace (the plugin's one private vLLM read).

vLLM's logits-processor interfaces give a processor each request's `SamplingParams` but not its id,
and `pop_trace` returns traces by request id. So, only when an engine records a trace, the model
runner's sampling method is wrapped to note the batch's request ids before it samples:

- V1 runner: `GPUModelRunner._sample(self, logits, spec_decode_metadata)`, ids `self.input_batch.req_ids`
  (row i = batch index i), rows that sample a discarded token from `self.discard_request_mask.np`;
- Model Runner V2: `GPUModelRunner.sample(self, hidden_states, input_batch, ...)`, ids
  `input_batch.req_ids` (row i = batch position i without speculative decoding, which is refused).

Both are private: `install` checks that the method and its parameters exist (capability, not version)
and names what is missing; sampling itself never depends on them.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np

from autodeco_lp.vllm.interfaces import INTERFACES, installed_problem

_ids: list[str] | None = None
_keep: np.ndarray | None = None


def current(rows: int) -> tuple[list[str], np.ndarray | None]:
    """The ids noted for this sampler call (at least `rows` of them) and the V1 keep mask (or None)."""
    if _ids is None or len(_ids) < rows:
        raise RuntimeError(
            "AutoDeco trace: the request ids of the rows being sampled were not noted (the runner's sampling "
            "method was not wrapped); turn record_trace off or report the vLLM version."
        )
    return _ids, _keep


def _note(ids, discard) -> None:
    global _ids, _keep
    _ids = list(ids)
    _keep = None if discard is None else ~np.asarray(discard[: len(_ids)], dtype=bool)


def install(use_v2_model_runner: bool) -> None:
    """Wrap the runner's sampling method once per process (idempotent); RuntimeError naming what is missing."""
    purpose = "MRv2 trace request ids" if use_v2_model_runner else "V1 trace request ids"
    interface = next(i for i in INTERFACES if i.purpose == purpose)
    problem = installed_problem(interface)
    if problem is not None:
        raise RuntimeError(
            f"AutoDeco's trace needs a private vLLM method that this vLLM lacks: {problem}. Start the engine "
            'without "record_trace" (sampling with the heads does not need it).'
        )
    runner = getattr(importlib.import_module(interface.module), interface.owner)
    original = getattr(runner, interface.member)
    if getattr(original, "_autodeco_wrapped", False):
        return

    if use_v2_model_runner:

        @functools.wraps(original)
        def wrapped(self, hidden_states, input_batch, *args, **kwargs):
            _note(input_batch.req_ids, None)
            return original(self, hidden_states, input_batch, *args, **kwargs)

    else:

        @functools.wraps(original)
        def wrapped(self, logits, spec_decode_metadata, *args, **kwargs):
            discard = getattr(getattr(self, "discard_request_mask", None), "np", None)
            _note(self.input_batch.req_ids, discard)
            return original(self, logits, spec_decode_metadata, *args, **kwargs)

    wrapped._autodeco_wrapped = True
    setattr(runner, interface.member, wrapped)
