"""The heads see the same inputs everywhere: inference, the training loss, the ranking loss and the
diagnostics all turn final hidden states into logits through `OutputProjection` (bias and softcap
included), so on a softcapped model with an `lm_head` bias every path feeds the top-p head the same
features for the same positions."""

from __future__ import annotations

import torch
from torch import nn
from transformers import Gemma2Config, Gemma2ForCausalLM

from autodeco_lp import AutoDeco, AutoDecoHeads
from autodeco_lp.evaluation.diagnose import head_statistics
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.training.data import Example
from autodeco_lp.training.hidden import supervised_hidden_states
from autodeco_lp.training.losses import LossConfig, autodeco_loss_sums
from autodeco_lp.training.ranking import control_ranking_sums
from tests.conftest import HIDDEN, TINY_DIMS, VOCAB, random_heads

SOFTCAP = 5.0


def softcapped_model() -> Gemma2ForCausalLM:
    """A tiny Gemma 2 (final logit softcap) whose `lm_head` also has a bias."""
    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=VOCAB,
        max_position_embeddings=128,
        head_dim=8,
        final_logit_softcapping=SOFTCAP,
        tie_word_embeddings=False,
        **TINY_DIMS,
    )
    model = Gemma2ForCausalLM(config).eval()
    lm_head = nn.Linear(HIDDEN, VOCAB, bias=True)
    with torch.no_grad():
        lm_head.weight.copy_(torch.randn(VOCAB, HIDDEN))  # large logits, so the softcap matters
        lm_head.bias.copy_(torch.randn(VOCAB))
    model.lm_head = lm_head
    model.generation_config.pad_token_id = 0
    return model


class RecordingHeads(AutoDecoHeads):
    """AutoDecoHeads that keep every `(hidden, logits)` they were called with."""

    def __init__(self, heads: AutoDecoHeads) -> None:
        super().__init__(heads.config)
        self.load_state_dict(heads.state_dict())
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, hidden_states, logits=None, run_top_p_head=True):
        self.calls.append((hidden_states.detach().float().clone(), logits.detach().float().clone()))
        return super().forward(hidden_states, logits, run_top_p_head)

    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All recorded calls, concatenated: `(hidden (N, H), logits (N, V))`; then forget them."""
        hidden = torch.cat([h.reshape(-1, h.shape[-1]) for h, _ in self.calls])
        logits = torch.cat([x.reshape(-1, x.shape[-1]) for _, x in self.calls])
        self.calls = []
        return hidden, logits


def test_softcapped_model_features_are_identical_in_every_path():
    model = softcapped_model()
    heads = RecordingHeads(random_heads())
    prompt = torch.tensor([[1, 5, 9, 14, 3]])
    steps = 4

    # Inference: the processor's hook reads lm_head's input and output (then the softcap).
    with AutoDeco(model, heads) as autodeco:
        out = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=None, max_new_tokens=steps,
            min_new_tokens=steps, logits_processor=[autodeco],
        )  # fmt: skip
    inference_hidden, inference_logits = heads.features()  # (steps, H), (steps, V)
    assert inference_logits.shape == (steps, VOCAB)
    # The softcap was applied (raw logits of this lm_head reach far beyond it).
    assert inference_logits.abs().max() <= SOFTCAP
    with torch.no_grad():
        raw = model.lm_head(inference_hidden)
    assert raw.abs().max() > SOFTCAP

    # The same positions teacher-forced, as training sees them: the generated tokens are targets.
    ids = out[0].tolist()
    example = Example(tuple(ids), tuple([False] * prompt.shape[1] + [True] * steps))
    ((hidden, labels),) = supervised_hidden_states(model, [example], pad_id=0)  # (steps, H), (steps,)
    torch.testing.assert_close(hidden.float(), inference_hidden, rtol=1e-5, atol=1e-5)
    projection = OutputProjection.from_model(model)

    # The training loss.
    autodeco_loss_sums(heads, hidden, labels, projection, config=LossConfig(), compute_grads=False)
    loss_hidden, loss_logits = heads.features()
    torch.testing.assert_close(loss_logits, inference_logits, rtol=1e-5, atol=1e-5)

    # The ranking loss (plain-language control): three versions of the same response.
    control_ranking_sums(heads, [(hidden, hidden, hidden)], projection, compute_grads=False)
    _, ranking_logits = heads.features()
    torch.testing.assert_close(ranking_logits, inference_logits.repeat(3, 1), rtol=1e-5, atol=1e-5)

    # The diagnostics (`autodeco plot top-p`).
    head_statistics(heads, hidden, labels, projection)
    _, diagnostic_logits = heads.features()
    torch.testing.assert_close(diagnostic_logits, inference_logits, rtol=1e-5, atol=1e-5)


def test_output_projection_reads_softcap_through_the_text_config():
    model = softcapped_model()
    projection = OutputProjection.from_model(model)
    assert projection.softcap == SOFTCAP and projection.bias is not None
    hidden = torch.randn(3, HIDDEN)
    expected = torch.tanh((hidden @ model.lm_head.weight.T + model.lm_head.bias) / SOFTCAP) * SOFTCAP
    torch.testing.assert_close(projection(hidden), expected)
