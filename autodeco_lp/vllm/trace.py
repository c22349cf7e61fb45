"""Getting the per-token T and P out of a `vllm.LLM` (the HF path's `AutoDeco.trace`).

With `"record_trace": true` in the `autodeco` block of `hf_overrides`, the worker keeps, for every
request, the `(T, P)` the heads gave each sampled token (after the engine-level settings, before
the request's own temperature/top_p scales). `pop_trace(llm)` fetches and clears them through
`LLM.apply_model` (public API; with vLLM's default multiprocessing engine it needs
`VLLM_ALLOW_INSECURE_SERIALIZATION=1`, since it ships a function to the worker; in-process engines,
`VLLM_ENABLE_V1_MULTIPROCESSING=0`, need nothing).
"""

from __future__ import annotations


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


def trace_for(trace: dict[str, list[tuple[float, float]]], request_id: str) -> list[tuple[float, float]]:
    """The pairs of one `RequestOutput.request_id` in a `pop_trace` result."""
    hits = [pairs for key, pairs in trace.items() if key == request_id or key.startswith(f"{request_id}-")]
    if len(hits) != 1:
        raise KeyError(f"request {request_id!r}: {len(hits)} matching traces among {sorted(trace)[:5]}...")
    return hits[0]
