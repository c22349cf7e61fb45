"""Getting the per-token T and P out of a `vllm.LLM` (the HF path's `AutoDeco.trace`).

With `"record_trace": true` in the `autodeco` block of `hf_overrides`, the worker keeps, for every
request, the `(T, P)` the heads gave each sampled token (after the engine-level settings, before the
request's own temperature/top_p). `pop_trace(llm)` fetches and clears them through `LLM.apply_model`
(public API; with vLLM's default multiprocessing engine it needs `VLLM_ALLOW_INSECURE_SERIALIZATION=1`,
since it ships a function to the worker; in-process engines, `VLLM_ENABLE_V1_MULTIPROCESSING=0`, need
nothing). `trace_for(trace, request_id, index)` picks one completion, also of `n > 1` requests.

The trace is bounded: at most `trace_max_tokens` pairs (default 10 million, 80 MB) are held between two
`pop_trace` calls; beyond that the oldest requests are dropped, with a warning. A server never calls
`pop_trace`, so `autodeco serve` leaves the trace off.
"""

from __future__ import annotations

import logging
import threading
from array import array
from collections import OrderedDict

import numpy as np
import torch

from autodeco_lp.vllm import request_ids
from autodeco_lp.vllm.options import DEFAULT_TRACE_MAX_TOKENS

logger = logging.getLogger(__name__)


class TraceRecorder:
    """Per vLLM request id, the `(T, P)` of every sampled token, at most `max_tokens` pairs in all."""

    def __init__(self, max_tokens: int = DEFAULT_TRACE_MAX_TOKENS) -> None:
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._rows: OrderedDict[str, tuple[array, array]] = OrderedDict()  # oldest request first
        self._held = 0
        self._warned = False

    def record(self, req_ids: list[str], temperature: list[float], top_p: list[float]) -> None:
        with self._lock:
            for req_id, t, p in zip(req_ids, temperature, top_p, strict=True):
                ts, ps = self._rows.get(req_id) or self._rows.setdefault(req_id, (array("f"), array("f")))
                ts.append(t)
                ps.append(p)
            self._held += len(req_ids)
            while self._held > self.max_tokens and len(self._rows) > 1:
                _, (dropped, _) = self._rows.popitem(last=False)
                self._held -= len(dropped)
                if not self._warned:
                    self._warned = True
                    logger.warning(
                        "AutoDeco trace: more than %d (T, P) pairs held since the last pop_trace; dropping the "
                        "oldest requests. Call autodeco_lp.vllm.pop_trace(llm) more often, raise "
                        "trace_max_tokens, or turn record_trace off.",
                        self.max_tokens,
                    )

    def record_rows(self, rows: np.ndarray, temperature: torch.Tensor, top_p: torch.Tensor | None, keep) -> None:
        """The pairs of `rows` (`(k,)` row indices; temperature, top_p `(k,)`), named by the runner's request ids.

        keep: None, or a callable giving `(all rows,)` bools of the rows that sample a real token (a
        chunk of a longer prompt samples a token vLLM throws away).
        """
        ids, runner_keep = request_ids.current(len(rows) and int(rows.max()) + 1)
        kept = np.ones(rows.shape, dtype=bool)
        for mask in (runner_keep, keep() if keep is not None else None):
            if mask is not None:
                kept &= np.asarray(mask, dtype=bool)[rows]
        t = temperature.tolist()
        p = top_p.tolist() if top_p is not None else [1.0] * len(t)
        chosen = np.flatnonzero(kept)
        self.record([ids[rows[i]] for i in chosen], [t[i] for i in chosen], [p[i] for i in chosen])

    def pop_all(self) -> dict[str, list[tuple[float, float]]]:
        with self._lock:
            rows, self._rows, self._held = self._rows, OrderedDict(), 0
        return {req_id: list(zip(ts.tolist(), ps.tolist())) for req_id, (ts, ps) in rows.items()}


def _pop_from_model(model) -> dict[str, list[tuple[float, float]]] | None:
    recorder = getattr(model, "autodeco_trace", None)
    return None if recorder is None else recorder.pop_all()


def pop_trace(llm) -> dict[str, list[tuple[float, float]]]:
    """`{request_id: [(T, P), ...]}` recorded since the last call, one pair per sampled token.

    vLLM's internal request id is the `RequestOutput.request_id` plus a suffix; `trace_for` matches them.
    """
    results = llm.apply_model(_pop_from_model)
    if all(r is None for r in results):
        raise ValueError(
            "no AutoDeco trace is recorded by this engine: start it with "
            "hf_overrides=autodeco_lp.vllm.hf_overrides(heads, record_trace=True)."
        )
    return next(r for r in results if r is not None)  # TP ranks record the same rows


def trace_for(
    trace: dict[str, list[tuple[float, float]]], request_id: str, index: int = 0
) -> list[tuple[float, float]]:
    """The pairs of completion `index` of one `RequestOutput.request_id` in a `pop_trace` result.

    vLLM names a request `ID-xxxxxxxx` inside the engine, and the `n > 1` completions of a request
    `I_ID-xxxxxxxx` (I = `CompletionOutput.index`).
    """
    names = [f"{index}_{request_id}"] + ([request_id] if index == 0 else [])
    hits = [pairs for key, pairs in trace.items() if any(key == n or key.startswith(f"{n}-") for n in names)]
    if len(hits) != 1:
        raise KeyError(
            f"request {request_id!r} completion {index}: {len(hits)} matching traces among "
            f"{sorted(trace)[:5]}... (a trace holds the requests sampled since the last pop_trace, up to "
            "trace_max_tokens pairs)"
        )
    return hits[0]
