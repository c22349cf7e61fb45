"""AutoDeco as a vLLM logits processor, on both model runners' public interfaces.

`AutoDecoLogitsProcessor` is registered under vLLM's `vllm.logits_processors` entry-point group, so
every engine loads it with no option and no environment variable. Both runners read that one group:
Model Runner V2 (vLLM's default on GPUs) builds `AutoDecoLogitsProcessor(vllm_config, req_states)`
and requires a subclass of its interface (`apply(logits, ctx)`); the V1 runner builds
`AutoDecoLogitsProcessor(vllm_config, device, is_pin_memory)`, which `__new__` answers with an
`AutoDecoV1Processor` (`apply(logits)`, `update_state`). Either one:

- on an engine whose model is not AutoDeco, does nothing (MRv2: declines every request, so vLLM
  skips it; V1: returns the logits as they are); an `autodeco` block in `hf_overrides` without the
  AutoDeco architecture is refused, since it would serve the plain model with no heads;
- on an AutoDeco engine, applies the `(T, P)` staged by the model's `compute_logits` to the rows of
  requests that are neither greedy nor switched off (`sampling.py` has the rule and its exactness).
"""

from __future__ import annotations

import numpy as np
import torch
from vllm.v1.sample.logits_processor.interface import BatchUpdate, MoveDirectionality
from vllm.v1.sample.logits_processor.interface import LogitsProcessor as V1LogitsProcessor

from autodeco_lp.vllm.options import ARCHITECTURE, OVERRIDES_KEY, RELEASED_ARCHITECTURE
from autodeco_lp.vllm.sampling import SlotTable, apply_rows, processor_built, request_switch

try:  # Model Runner V2's interface; without it (an older vLLM) only the V1 runner exists
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsContext
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as V2LogitsProcessor
except ImportError:  # pragma: no cover (every supported vLLM has it)
    LogitsContext = None
    V2LogitsProcessor = object


def is_autodeco_engine(vllm_config) -> bool:
    """Whether the engine serves an AutoDeco model; a ValueError for an `autodeco` block on another model."""
    hf_config = vllm_config.model_config.hf_config
    architectures = list(getattr(hf_config, "architectures", None) or [])
    if ARCHITECTURE in architectures or RELEASED_ARCHITECTURE in architectures:
        return True
    if getattr(hf_config, OVERRIDES_KEY, None) is not None:
        raise ValueError(
            f'`hf_overrides` has an "{OVERRIDES_KEY}" block but the architecture is {architectures}, so the model '
            f'would be served without AutoDeco heads; add "architectures": ["{ARCHITECTURE}"] (autodeco_lp.vllm.'
            "hf_overrides(...) writes both), or drop the block to serve the plain model."
        )
    return False


def _table_size(vllm_config) -> int:
    return int(getattr(getattr(vllm_config, "scheduler_config", None), "max_num_seqs", None) or 256)


def _validate(sampling_params) -> None:
    request_switch(sampling_params)


class AutoDecoV1Processor(V1LogitsProcessor):
    """The V1 runner's processor: argmax-invariant, so it runs after the request temperature and is
    skipped for all-greedy batches. Slots are persistent-batch indices, kept by `update_state`."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        self.enabled = is_autodeco_engine(vllm_config)
        self.table = SlotTable(_table_size(vllm_config))
        if self.enabled:
            processor_built()

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        _validate(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return True  # dividing by T > 0 and a nucleus that keeps the top token leave the argmax alone

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not self.enabled or batch_update is None:
            return
        # vLLM's order: removed, added, moved.
        for index in batch_update.removed:
            self.table.clear(index)
        for index, params, _prompt_ids, _output_ids in batch_update.added:
            self.table.add(index, params)
        for source, target, direction in batch_update.moved:
            if direction == MoveDirectionality.SWAP:
                self.table.swap(source, target)
            else:
                self.table.move(source, target)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return logits
        # Row i samples for batch index i. (rows, V) in, (rows, V) out.
        return apply_rows(logits, np.arange(logits.shape[0]), self.table, request_temperature_applied=True)


class AutoDecoLogitsProcessor(V2LogitsProcessor):
    """Model Runner V2's processor (and, through `__new__`, the V1 runner's). Slots are MRv2 request slots."""

    def __new__(cls, vllm_config, *args, **kwargs):
        if len(args) == 2 or "is_pin_memory" in kwargs:  # the V1 runner: (vllm_config, device, is_pin_memory)
            return AutoDecoV1Processor(vllm_config, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, vllm_config, req_states) -> None:
        self.enabled = is_autodeco_engine(vllm_config)
        self.req_states = req_states
        self.table = SlotTable(int(getattr(req_states, "max_num_reqs", 0) or _table_size(vllm_config)))
        if self.enabled:
            processor_built()

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        _validate(sampling_params)

    def add_request(self, req_idx: int, sampling_params) -> bool:
        """True when the heads apply to the request (vLLM then runs `apply` for the batches holding it)."""
        if not self.enabled:
            return False
        return self.table.add(req_idx, sampling_params)

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        if not self.enabled:
            return logits
        slots = ctx.idx_mapping_np  # (requests,) batch position -> slot, on the host: no device sync
        if len(slots) != logits.shape[0]:
            raise RuntimeError(
                f"AutoDeco: {logits.shape[0]} logits rows for {len(slots)} requests (several rows per request, "
                "as under speculative decoding, are not supported)."
            )

        def keep() -> np.ndarray:  # a row samples a real token once its input is the prompt's last token
            prefill_len = np.asarray(self.req_states.prefill_len.np)[slots]
            return ctx.pos.cpu().numpy() + 1 >= prefill_len

        return apply_rows(logits, slots, self.table, request_temperature_applied=False, keep=keep)
