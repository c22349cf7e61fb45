"""The vLLM plugin's pieces that need no engine: options, the sampler rule, released configs, settings."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from autodeco_lp.inference.settings import DecodingSettings
from autodeco_lp.vllm.options import AutoDecoVllmOptions, hf_overrides


def test_hf_overrides_builds_and_validates_the_block():
    assert hf_overrides("heads/x", temperature_scale=0.5) == {
        "architectures": ["AutoDecoForCausalLM"],
        "autodeco": {"temperature_scale": 0.5, "heads": "heads/x"},
    }
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['temprature_scale'\]"):
        hf_overrides("h", temprature_scale=0.5)
    with pytest.raises(ValueError, match="`top_p_scale` has to be a positive float, but is -1"):
        hf_overrides("h", top_p_scale=-1)
    with pytest.raises(ValueError, match=r'`hf_overrides\["autodeco"\]` has to be a JSON object'):
        AutoDecoVllmOptions.from_hf_config(SimpleNamespace(autodeco="heads/x"))
    options = AutoDecoVllmOptions.from_hf_config(SimpleNamespace(autodeco={"heads": "d", "record_trace": True}))
    assert options.heads == "d" and options.record_trace and options.settings == DecodingSettings()


@pytest.mark.parametrize("name", ["record_trace", "use_temperature_head", "use_top_p_head"])
def test_switches_given_as_strings_are_refused(name):
    """JSON from the command line: `"false"` used to read as True (`bool("false")`)."""
    with pytest.raises(TypeError, match=rf"{name}(\"\])?` has to be True or False, but is 'false'"):
        hf_overrides("h", **{name: "false"})
    assert AutoDecoVllmOptions.from_block({name: False}) is not None


@pytest.mark.parametrize("name", ["temperature_scale", "top_p_scale", "min_temperature"])
def test_infinite_scales_are_refused(name):
    with pytest.raises(ValueError, match=rf"`{name}` has to be a finite positive float, but is inf; pass a finite"):
        DecodingSettings(**{name: math.inf})
    with pytest.raises(ValueError, match=rf"`{name}` has to be a positive float, but is nan"):
        DecodingSettings(**{name: math.nan})


def test_max_temperature_inf_means_no_cap():
    settings = DecodingSettings(max_temperature=math.inf, temperature_scale=3.0)
    t, p = settings.apply(torch.tensor([1.5]), torch.tensor([0.5]))
    assert t.item() == pytest.approx(4.5) and p.item() == pytest.approx(0.5)


def test_processor_rejects_infinite_temperature_scale():
    from autodeco_lp import AutoDeco
    from tests.conftest import random_heads, tiny_llama

    with pytest.raises(ValueError, match="`temperature_scale` has to be a finite positive float, but is inf"):
        AutoDeco(tiny_llama(), random_heads(), temperature_scale=float("inf"))


def test_released_config_reads_as_the_base_config(tmp_path):
    import json

    from transformers import AutoConfig, LlamaConfig

    from autodeco_lp.vllm.released import register_released_config

    register_released_config()
    base = LlamaConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=1, vocab_size=50).to_dict()
    base.update(model_type="autodeco", architectures=["AutoDecoModelForCausalLM"], base_model_type="llama")
    base.update(enable_temperature_head=True, enable_top_p_head=True, use_enhanced_features=True)
    (tmp_path / "config.json").write_text(json.dumps(base))
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, LlamaConfig) and config.hidden_size == 64
    assert config.architectures == ["AutoDecoForCausalLM"]
    assert config.autodeco == {"base_architecture": "LlamaForCausalLM"}
    base["base_model_type"] = None
    (tmp_path / "config.json").write_text(json.dumps(base))
    with pytest.raises(ValueError, match="needs `base_model_type` naming a transformers model type"):
        AutoConfig.from_pretrained(tmp_path)


def test_speculative_decoding_and_pipeline_parallelism_are_refused():
    # Checked on a stand-in config: a real n-gram engine imports numba, whose llvmlite objects then
    # break vLLM 0.32's kernel-override scan of sys.modules for every later engine in the process.
    from autodeco_lp.vllm.model import check_supported

    config = SimpleNamespace(speculative_config=None, parallel_config=SimpleNamespace(pipeline_parallel_size=1))
    check_supported(config)
    with pytest.raises(ValueError, match="AutoDeco does not support speculative decoding"):
        check_supported(SimpleNamespace(**{**vars(config), "speculative_config": object()}))
    with pytest.raises(ValueError, match="not pipeline parallelism"):
        check_supported(
            SimpleNamespace(**{**vars(config), "parallel_config": SimpleNamespace(pipeline_parallel_size=2)})
        )
    sharded = SimpleNamespace(pipeline_parallel_size=1, enable_batch_sharded_sampling=True)
    with pytest.raises(ValueError, match="does not support batch-sharded sampling"):
        check_supported(SimpleNamespace(**{**vars(config), "parallel_config": sharded}))


def test_wheel_checker_passes_on_the_installed_vllm_and_names_what_is_missing(tmp_path):
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO, require, run_bench

    spec = importlib.util.find_spec("vllm") or require("vllm")  # without vLLM: a skip locally, a failure in CI
    site = Path(spec.origin).parent.parent
    out = run_bench("check_vllm_wheel.py", str(site), timeout=120)
    assert "0 public missing" in out.stdout, out.stdout
    # A vLLM whose MRv2 interface lost `apply(logits, ctx)` fails, naming it.
    fake = tmp_path / "vllm" / "v1" / "worker" / "gpu" / "sample" / "logits_processor"
    fake.mkdir(parents=True)
    (tmp_path / "vllm" / "__init__.py").write_text("")
    (fake / "interface.py").write_text("class LogitsProcessor:\n    def apply(self, logits):\n        pass\n")
    script = str(REPO / "benchmarks" / "check_vllm_wheel.py")
    out = subprocess.run([sys.executable, script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "LogitsProcessor.apply takes ('self', 'logits'), not ('self', 'logits', 'ctx')" in out.stdout


class _StandInLLM(torch.nn.Module):
    """The base model as the AutoDeco model sees it: a parameter (for the device) and `compute_logits`."""

    def __init__(self, lm_head: torch.Tensor) -> None:
        super().__init__()
        self.lm_head = torch.nn.Parameter(lm_head, requires_grad=False)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.lm_head.T  # (rows, H) -> (rows, V)


@pytest.mark.parametrize(("enable_top_p_head", "use_top_p_head"), [(True, True), (False, True), (True, False)])
def test_compute_logits_stages_p_only_when_the_checkpoint_has_the_head_and_it_is_on(
    tmp_path, enable_top_p_head, use_top_p_head
):
    """Heads fitted without a top-p head used to stage P = 1 for every row, so the processor sorted the
    vocabulary at every step for nothing; the HF processor turns such a head off, and so does the plugin."""
    from autodeco_lp.vllm import sampling
    from autodeco_lp.vllm.model import AutoDecoForCausalLM
    from tests.conftest import HIDDEN, VOCAB, random_heads

    heads = random_heads(enable_top_p_head=enable_top_p_head)
    heads.save_pretrained(tmp_path / "heads")
    model = AutoDecoForCausalLM.__new__(AutoDecoForCausalLM)  # no engine: the attributes __init__ sets
    torch.nn.Module.__init__(model)
    model.llm = _StandInLLM(torch.randn(VOCAB, HIDDEN))
    model.autodeco_options = AutoDecoVllmOptions.from_block({"use_top_p_head": use_top_p_head, "top_p_scale": 0.5})
    model.autodeco_settings = model.autodeco_options.settings
    model.autodeco_heads_source, model.autodeco_model_name = str(tmp_path / "heads"), "stand-in"
    model.autodeco_hidden_size, model.autodeco_vocab_size = HIDDEN, VOCAB
    model.autodeco_trace, model.autodeco_checked_processor = None, True
    model._load_heads()
    hidden = torch.randn(3, HIDDEN)
    logits = model.compute_logits(hidden)
    staged = sampling.take(3)
    assert torch.equal(logits, model.llm.compute_logits(hidden))  # the base logits, unchanged
    expected_t, expected_p = heads(hidden, logits)
    torch.testing.assert_close(staged.temperature, expected_t.clamp_min(1e-2))
    if enable_top_p_head and use_top_p_head:
        torch.testing.assert_close(staged.top_p, expected_p * 0.5)
    else:
        assert staged.top_p is None
    assert model.autodeco_settings.use_top_p_head is (enable_top_p_head and use_top_p_head)
