"""AutoDeco in vLLM from a plain Python script: the embedded SmolLM2, its shipped heads, and the T and P
vLLM applied to every sampled token.

.venv/bin/python examples/vllm_trace.py "What is 5 * 3?"

The order matters:
1. `in_process_engines()` before vLLM is imported: the engine then runs in this process, so `pop_trace`
   reads the trace with a plain function call (vLLM's default multiprocessing engine would have to
   pickle that function, which it refuses unless VLLM_ALLOW_INSECURE_SERIALIZATION=1), and on a CPU the
   KV cache is bounded to 4 GiB.
2. The engine is built under `if __name__ == "__main__":`: vLLM starts worker processes with `spawn`
   where it needs them, which re-imports this file.
"""

import os
import sys

from autodeco_lp.vllm import hf_overrides, in_process_engines, pop_trace

in_process_engines()
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM's INFO lines would bury the trace; INFO brings them back


def main(prompt: str) -> None:
    from vllm import LLM, SamplingParams

    from autodeco_lp.hub.models import model_source
    from autodeco_lp.hub.registry import find_heads
    from autodeco_lp.vllm.trace import trace_for

    model = model_source("smollm2")  # the converted folder of the embedded model (no download)
    heads = find_heads(model.name).heads  # the heads registered for it: heads/smollm2-135m-instruct
    llm = LLM(model.path, hf_overrides=hf_overrides(heads, record_trace=True), max_model_len=512, seed=0)
    # Request T = P = 1: the heads' T and P are used as they are (the request's values scale them).
    params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=32, seed=0)
    (output,) = llm.chat([[{"role": "user", "content": prompt}]], params, use_tqdm=False)
    completion = output.outputs[0]
    # [(T, P)] per sampled token. With async scheduling (vLLM's default on GPUs) the engine may sample one step past
    # a request's end before it knows the request stopped; that draw is recorded but is no token of the output.
    pairs = trace_for(pop_trace(llm), output.request_id)[: len(completion.token_ids)]
    print(completion.text)
    for token, (temperature, top_p) in zip(completion.token_ids, pairs, strict=True):
        print(f"{llm.get_tokenizer().decode([token])!r:>14}  T={temperature:.3f}  P={top_p:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "What is 5 * 3?")
