"""The heads reproduce the released architecture, names and parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autodeco_lp import AutoDecoConfig, AutoDecoHeads
from autodeco_lp.inference.features import distribution_statistics

RELEASED_NAMES = {
    "temp_head.mlp.0.weight": (256, 16),
    "temp_head.mlp.0.bias": (256,),
    "temp_head.mlp.2.weight": (1, 256),
    "temp_head.mlp.2.bias": (1,),
    "top_p_head.mlp.0.weight": (256, 21),
    "top_p_head.mlp.0.bias": (256,),
    "top_p_head.mlp.2.weight": (1, 256),
    "top_p_head.mlp.2.bias": (1,),
}


def test_tensor_names_and_shapes_match_released_files():
    heads = AutoDecoHeads(AutoDecoConfig(hidden_size=16))
    assert {k: tuple(v.shape) for k, v in heads.state_dict().items()} == RELEASED_NAMES


@pytest.mark.parametrize("hidden,millions", [(3584, 1.84), (4096, 2.1), (2880, 1.48), (2048, 1.05)])
def test_parameter_counts_of_released_sizes(hidden, millions):
    count = sum(p.numel() for p in AutoDecoHeads(AutoDecoConfig(hidden_size=hidden)).parameters())
    assert count / 1e6 == pytest.approx(millions, abs=0.01)


def test_forward_matches_a_plain_reimplementation():
    torch.manual_seed(0)
    heads = AutoDecoHeads(AutoDecoConfig(hidden_size=16, vocab_size=40))
    h, logits = torch.randn(2, 5, 16), torch.randn(2, 5, 40)
    sd = heads.state_dict()

    def mlp(x, prefix):
        x = torch.relu(x @ sd[f"{prefix}.mlp.0.weight"].T + sd[f"{prefix}.mlp.0.bias"])
        return torch.sigmoid(x @ sd[f"{prefix}.mlp.2.weight"].T + sd[f"{prefix}.mlp.2.bias"]).squeeze(-1)

    t_ref = 2 * mlp(h, "temp_head")
    q = torch.softmax(logits / (t_ref[..., None] + 1e-8), -1)
    stats = [q.max(-1).values, -(q * torch.log(q + 1e-8)).sum(-1), q.var(-1), q.topk(5, -1).values.sum(-1)]
    p_ref = mlp(torch.cat([h, t_ref[..., None]] + [s[..., None] for s in stats], -1), "top_p_head")
    t, p = heads(h, logits)
    torch.testing.assert_close(t, t_ref)
    torch.testing.assert_close(p, p_ref)
    assert torch.all((t > 0) & (t < 2)) and torch.all((p > 0) & (p < 1))


@pytest.mark.parametrize("shape", [(16,), (3, 16), (2, 3, 16), (2, 1, 4, 16)])
def test_any_leading_shape(shape):
    heads = AutoDecoHeads(AutoDecoConfig(hidden_size=16, vocab_size=10))
    t, p = heads(torch.randn(shape), torch.randn(*shape[:-1], 10))
    assert t.shape == p.shape == shape[:-1]


def test_switches():
    t_only = AutoDecoHeads(AutoDecoConfig(hidden_size=8, enable_top_p_head=False))
    assert t_only.top_p_head is None and set(t_only.state_dict()) == {k for k in RELEASED_NAMES if k.startswith("temp")}
    t, p = t_only(torch.randn(3, 8))
    assert torch.all(p == 1)
    p_only = AutoDecoHeads(AutoDecoConfig(hidden_size=8, enable_temperature_head=False))
    t, p = p_only(torch.randn(3, 8), torch.randn(3, 11))
    assert torch.all(t == 1) and torch.all(p < 1)
    plain = AutoDecoHeads(AutoDecoConfig(hidden_size=8, use_enhanced_features=False))
    assert plain.top_p_head.mlp[0].in_features == 9  # [h, T], as the official code without statistics
    plain(torch.randn(3, 8))  # no logits needed


def test_temperature_is_detached_into_top_p_head():
    heads = AutoDecoHeads(AutoDecoConfig(hidden_size=8))
    _, p = heads(torch.randn(4, 8), torch.randn(4, 11))
    p.sum().backward()
    assert all(param.grad is None for param in heads.temp_head.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_dtype_and_input_dtype_mix(dtype):
    heads = AutoDecoHeads(AutoDecoConfig(hidden_size=8)).to(dtype)
    t, p = heads(torch.randn(2, 8, dtype=torch.bfloat16), torch.randn(2, 11, dtype=torch.bfloat16))
    assert t.dtype == p.dtype == torch.float32 and torch.isfinite(t).all() and torch.isfinite(p).all()


def test_wrong_hidden_width_is_a_clear_error():
    heads = AutoDecoHeads(AutoDecoConfig(hidden_size=8))
    with pytest.raises(ValueError, match="width 9 but the heads expect hidden_size=8"):
        heads(torch.randn(2, 9), torch.randn(2, 11))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden_size": 0}, "`hidden_size` has to be a positive integer, but is 0"),
        ({"hidden_size": 8, "vocab_size": -1}, "`vocab_size` has to be a positive integer"),
        ({"hidden_size": 8, "enable_temperature_head": False, "enable_top_p_head": False}, "both False"),
        ({"hidden_size": 8, "use_enhanced_features": "yes"}, "`use_enhanced_features` has to be a bool"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AutoDecoConfig(**kwargs)


def test_config_round_trip_and_unknown_keys():
    config = AutoDecoConfig(hidden_size=8, vocab_size=5, base_model_name_or_path="org/model")
    assert AutoDecoConfig.from_dict(config.to_dict()) == config
    with pytest.warns(UserWarning, match=r"ignoring unknown key\(s\) \['surprise'\]"):
        AutoDecoConfig.from_dict({**config.to_dict(), "surprise": 1}, source="x.json")
    with pytest.raises(ValueError, match=r"x.json is missing the required key\(s\) \['hidden_size'\]"):
        AutoDecoConfig.from_dict({"vocab_size": 5}, source="x.json")


def test_heads_are_plain_modules_with_sigmoid_activations():
    heads = AutoDecoHeads(AutoDecoConfig(hidden_size=8))
    assert [type(m) for m in heads.temp_head.mlp] == [nn.Linear, nn.ReLU, nn.Linear, nn.Sigmoid]
    assert distribution_statistics(torch.zeros(1, 4), 1.0).shape == (1, 4)
