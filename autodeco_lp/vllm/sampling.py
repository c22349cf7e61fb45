"""The AutoDeco sampling step inside vLLM, shared by the V1 and the Model Runner V2 logits processors.

vLLM's logits processors never see hidden states, so the AutoDeco model's `compute_logits(hidden
(rows, H))` computes the heads' `(T, P)` for exactly the rows vLLM samples and stages them here (one
model per worker process). The logits processor (`processors.py`) then takes them for the same rows,
in the same order, and `apply_heads` returns, per AutoDeco row,

    logits / T, with the tokens outside the nucleus at P of softmax(logits / (T * request_T)) at -inf

vLLM divides by the request's own temperature afterwards (MRv2: after the processor; V1: before it,
for the processor is argmax-invariant), so a token is drawn from softmax(logits / (T * request_T))
restricted to the heads' nucleus. Against the authors' rule (`T * request_T`, request T = 0 greedy;
`clamp(P * request_P, 0, 1)`):
- temperature: exact. Greedy rows (request T < 1e-5) are left alone: vLLM takes their argmax.
- top-p: exact when the request's top_p is 1 (the default). With request top_p < 1, vLLM's own top-p
  runs inside the heads' nucleus: it keeps the smallest prefix with mass >= request_P * M, where M, the
  nucleus' mass, is >= P and less than P plus its last token's probability; the authors' set (mass >=
  P * request_P) is contained in it.
- request top_k runs after the heads' nucleus (the authors' fork: before it); request min_p runs after
  it on MRv2 and before it, at the request temperature, on the V1 runner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from autodeco_lp.inference.features import hard_top_p_filter

# vLLM's samplers treat a temperature below this as greedy (`vllm.v1.sample.sampler._SAMPLING_EPS`).
GREEDY_TEMPERATURE = 1e-5
# `SamplingParams(extra_args={"autodeco": False})` (OpenAI server: `"vllm_xargs": {"autodeco": false}`)
# samples one request with its own temperature and top-p, without the heads.
REQUEST_SWITCH = "autodeco"


def request_switch(sampling_params) -> bool:
    """The request's `extra_args["autodeco"]` (default True); a ValueError for anything but a bool."""
    value = (getattr(sampling_params, "extra_args", None) or {}).get(REQUEST_SWITCH, True)
    if not isinstance(value, bool):
        raise ValueError(
            f'`extra_args["{REQUEST_SWITCH}"]` has to be true or false, but is {value!r}; pass false to sample '
            "this request without the AutoDeco heads."
        )
    return value


class SlotTable:
    """Per request slot: whether the heads apply, and the request's temperature.

    A slot is the V1 persistent-batch index or the MRv2 request slot; both runners' processors fill it
    from `SamplingParams` and look rows up with `rows(slots)`, so the row mapping is one piece of code.
    """

    def __init__(self, size: int) -> None:
        self.active = np.zeros(size, dtype=bool)  # (slots,)
        self.temperature = np.ones(size, dtype=np.float32)  # (slots,) the request's T; 1 where greedy

    def _fit(self, slot: int) -> None:
        if slot >= self.active.shape[0]:  # vLLM sized us by max_num_seqs; grow rather than trust it
            grow = max(slot + 1, 2 * self.active.shape[0])
            self.active = np.resize(self.active, grow)
            self.temperature = np.resize(self.temperature, grow)
            self.active[slot:] = False

    def add(self, slot: int, sampling_params) -> bool:
        """The request in `slot` (overwriting any previous occupant); True when the heads apply to it."""
        self._fit(slot)
        temperature = float(sampling_params.temperature)
        greedy = temperature < GREEDY_TEMPERATURE
        self.active[slot] = not greedy and request_switch(sampling_params)
        self.temperature[slot] = 1.0 if greedy else temperature
        return bool(self.active[slot])

    def clear(self, slot: int) -> None:
        self._fit(slot)
        self.active[slot] = False

    def swap(self, a: int, b: int) -> None:
        self._fit(max(a, b))
        for values in (self.active, self.temperature):
            values[[a, b]] = values[[b, a]]

    def move(self, source: int, target: int) -> None:
        self._fit(max(source, target))
        for values in (self.active, self.temperature):
            values[target] = values[source]
        self.active[source] = False

    def rows(self, slots: np.ndarray) -> np.ndarray:
        """Indices of the rows (row i samples for `slots[i]`) the heads apply to. Shapes: `(rows,)` -> `(k,)`."""
        slots = np.asarray(slots)
        inside = slots < self.active.shape[0]
        active = np.zeros(slots.shape, dtype=bool)
        active[inside] = self.active[slots[inside]]
        return np.flatnonzero(active)


@dataclass
class Staged:
    """What `compute_logits` computed for the rows it returned."""

    temperature: torch.Tensor  # (rows,) fp32, the applied T (settings done)
    top_p: torch.Tensor | None  # (rows,) fp32, the applied P; None when the top-p head is off (P = 1)
    recorder: object | None  # trace.TraceRecorder when `record_trace` is on

    @property
    def rows(self) -> int:
        return self.temperature.shape[0]


_staged: Staged | None = None  # one AutoDeco model per worker process
_processors = 0  # AutoDeco logits processors built in this process (for an AutoDeco engine)


def stage(staged: Staged) -> None:
    """Called by `AutoDecoForCausalLM.compute_logits` with the `(T, P)` of the rows it returns."""
    global _staged
    _staged = staged


def take(rows: int) -> Staged:
    """The staged `(T, P)` for a sampler call on `rows` rows, consumed; a RuntimeError when they are not there."""
    global _staged
    staged, _staged = _staged, None
    if staged is None or staged.rows != rows:
        found = "none" if staged is None else f"{staged.rows} rows"
        raise RuntimeError(
            f"AutoDeco: vLLM samples {rows} rows but the AutoDeco model computed T and P for {found} "
            "(pipeline parallelism, speculative decoding, batch-sharded sampling or another execution path "
            "that bypasses the model's compute_logits); refusing to sample without the heads' T and P."
        )
    return staged


def processor_built() -> None:
    """Called when an AutoDeco logits processor is built for an AutoDeco engine in this process."""
    global _processors
    _processors += 1


def processors_built() -> int:
    return _processors


def apply_heads(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor | None,
    request_temperature: torch.Tensor | None,
) -> torch.Tensor:
    """The heads' T and P on `logits`, as the module docstring states; `logits` may be modified in place.

    Shapes: logits `(rows, V)` fp32; temperature, top_p, request_temperature `(rows,)`. request_temperature:
    the temperature vLLM applies after this step (MRv2), or None when it was applied before (V1) or is 1.
    """
    logits = logits.div_(temperature.to(logits.device, logits.dtype).unsqueeze(-1))  # (rows, V)
    if top_p is None:  # the top-p head is off: P = 1 keeps every token, no sort
        return logits
    top_p = top_p.to(logits.device)
    if request_temperature is None:
        return hard_top_p_filter(logits, top_p)
    # The nucleus of the distribution that is sampled, softmax(logits / (T * request_T)); the values stay
    # logits / T (vLLM divides by request_T next): x / r * r is x to within an ulp, -inf stays -inf.
    r = request_temperature.to(logits.device, logits.dtype).unsqueeze(-1)  # (rows, 1)
    return hard_top_p_filter(logits / r, top_p).mul_(r)


def apply_rows(
    logits: torch.Tensor,
    slots: np.ndarray,
    table: SlotTable,
    request_temperature_applied: bool,
    keep=None,
) -> torch.Tensor:
    """One sampler call: the staged `(T, P)` applied to the rows whose slot is active; the others untouched.

    logits `(rows, V)` fp32, row i sampling for `slots[i]`; request_temperature_applied: True on the V1
    runner (its processor runs after the request temperature). keep: a callable giving `(rows,)` bools of
    the rows that sample a real token (None: all), asked only when a trace is recorded.
    """
    rows = table.rows(slots)  # (k,)
    if rows.size == 0:  # no AutoDeco row (e.g. all greedy, or a warm-up batch): drop what was staged
        take_quietly()
        return logits
    staged = take(logits.shape[0])
    everything = rows.size == logits.shape[0]
    index = None if everything else torch.from_numpy(rows).to(logits.device)
    temperature = staged.temperature if everything else staged.temperature[index]
    top_p = staged.top_p if everything or staged.top_p is None else staged.top_p[index]
    request_t = None
    if not request_temperature_applied:
        request_np = table.temperature[np.asarray(slots)[rows]]  # (k,)
        if (request_np != 1.0).any():
            request_t = torch.from_numpy(request_np)
    if staged.recorder is not None:
        staged.recorder.record_rows(rows, temperature, top_p, keep)
    if everything:
        return apply_heads(logits, temperature, top_p, request_t)
    logits[index] = apply_heads(logits[index], temperature, top_p, request_t)
    return logits


def take_quietly() -> None:
    global _staged
    _staged = None
