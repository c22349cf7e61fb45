"""What `generate` is about to do around our processor, read once per generate call.

A `LogitsProcessor` only receives `(input_ids, scores)`. To warn about greedy decoding or about
warpers that transformers applies *after* us (user processors run before its built-in warpers), we look up the caller's
frames for the `generation_config` that `generate` resolved (call arguments merged with the
model's `generation_config` and the global defaults). This runs on the first step of a
generation only, never on the per-token path. If the frames are not found (the processor is
called by hand or by another library), nothing is checked.

This is a diagnostic only: the start of a generation is detected by the prefill pre-hook in
`capture.py`, never here. The transformers internals read (checked on 5.19-5.24), all as local
variables of the frames above us (`generate`, `_sample` / `_beam_search`, `_assisted_decoding`
and the candidate generator's own `generate`):
- `generation_config`: a `GenerationConfig` (the resolved one; the innermost is the decoding loop's);
- `generation_mode == GenerationMode.ASSISTED_GENERATION`, `assistant_model`, and the config's
  `prompt_lookup_num_tokens`: assisted or prompt-lookup decoding, which the processor refuses.
If a future transformers renames them, the checks silently find nothing and only the warnings
are lost; the refusal of assisted decoding also has a second line of defence in
`LMHeadCapture.take` (several positions scored per forward).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

# From configuration_utils, where both are defined: `transformers.generation.utils` would import the
# whole generation/modeling stack (~1.4 s) on `import autodeco_lp`; the classes are the same objects.
from transformers.generation.configuration_utils import GenerationConfig, GenerationMode

# Frames to look through: processor -> LogitsProcessorList -> _sample -> generate -> pipeline ...
_MAX_FRAMES = 40


@dataclass
class GenerationCallInfo:
    do_sample: bool
    num_beams: int
    assisted: bool
    # transformers' own warpers that will run after ours, e.g. {"top_k": 50}
    extra_warpers: dict[str, float]


def inspect_generate_call() -> GenerationCallInfo | None:
    """Find the resolved `generation_config` of the `generate` call that is calling us."""
    frame = sys._getframe(1)
    configs, assisted = [], False
    for _ in range(_MAX_FRAMES):
        if frame is None:
            break
        local_vars = frame.f_locals
        config = local_vars.get("generation_config")
        if isinstance(config, GenerationConfig):
            configs.append(config)
            # The candidate generator runs the assistant's own generate; the outer call is assisted.
            if local_vars.get("generation_mode") == GenerationMode.ASSISTED_GENERATION:
                assisted = True
            if getattr(config, "prompt_lookup_num_tokens", None) is not None:
                assisted = True
        if "assistant_model" in local_vars and local_vars["assistant_model"] is not None:
            assisted = True
        frame = frame.f_back
    if not configs:
        return None
    config = configs[0]  # innermost: the decoding loop's own config
    extra: dict[str, float] = {}
    if config.do_sample:
        if config.temperature is not None and config.temperature != 1.0:
            extra["temperature"] = config.temperature
        if config.top_p is not None and config.top_p < 1.0:
            extra["top_p"] = config.top_p
        if config.top_k is not None and config.top_k != 0:
            extra["top_k"] = config.top_k
        if getattr(config, "min_p", None) is not None:
            extra["min_p"] = config.min_p
        if getattr(config, "typical_p", None) is not None and config.typical_p < 1.0:
            extra["typical_p"] = config.typical_p
    return GenerationCallInfo(
        do_sample=bool(config.do_sample),
        num_beams=int(config.num_beams or 1),
        assisted=assisted,
        extra_warpers=extra,
    )
