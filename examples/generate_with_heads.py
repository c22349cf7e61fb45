"""Generate with AutoDeco heads on the embedded SmolLM2 and print the per-token T and P.

.venv/bin/python examples/generate_with_heads.py PATH/TO/HEADS "What is 17 + 25?"
"""

import sys

import torch

from autodeco_lp import AutoDeco
from autodeco_lp.hub.models import load_model

heads_dir, prompt = sys.argv[1], sys.argv[2]
model, tokenizer = load_model("smollm2")
text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
enc = tokenizer([text], return_tensors="pt")
torch.manual_seed(0)
with AutoDeco.from_pretrained(model, heads_dir) as autodeco:
    out = model.generate(
        **enc, do_sample=True, top_k=None, temperature=1.0, top_p=1.0, max_new_tokens=32, logits_processor=[autodeco]
    )
    trace = autodeco.trace
new = out[0, enc["input_ids"].shape[1] :]
for step, token in enumerate(new.tolist()):
    print(f"{tokenizer.decode([token])!r:>14}  T={trace.temperature[step, 0]:.3f}  P={trace.top_p[step, 0]:.3f}")
