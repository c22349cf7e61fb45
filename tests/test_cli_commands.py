"""`autodeco serve`, `plot` and `bench` options: the flags built from their dataclasses, the command lines
they make, and bad input refused with one clear line (no traceback) before anything heavy runs."""

from __future__ import annotations

import json
import logging
import shlex
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from autodeco_lp.cli.main import autodeco as cli
from autodeco_lp.vllm.serving import ServeArgs, serve_command_line, server_environment
from autodeco_lp.vllm.startup import CPU_KV_CACHE_GIB, bound_cpu_kv_cache, heads_log_line
from tests.conftest import random_heads, require


def _refused(args: list[str], *fragments: str) -> str:
    """Run the command; it must exit 1 with a one-line error holding every fragment, not a traceback."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    return result.output


@pytest.fixture(scope="module")
def heads_dir(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("heads")
    config = json.loads((tiny_model_dir / "config.json").read_text())
    random_heads(hidden=config["hidden_size"], vocab=config["vocab_size"]).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------- serve


def test_serve_prints_the_same_command_line_from_its_dataclass(tiny_model_dir, heads_dir):
    args = ["serve", "--model", str(tiny_model_dir), "--heads", str(heads_dir), "--port", "8123", "--dtype", "float32"]
    args += ["--max-model-len", "512", "--temperature-scale", "0.5", "--print-command", "--", "--seed", "3"]
    result = CliRunner().invoke(cli, args, env={"VLLM_CPU_KVCACHE_SPACE": "2"})
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.output)
    assert argv[1:4] == ["-m", "vllm.entrypoints.openai.api_server", "--model"]
    assert argv[argv.index("--port") + 1] == "8123" and argv[argv.index("--dtype") + 1] == "float32"
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--max-model-len") + 1] == "512"
    overrides = json.loads(argv[argv.index("--hf-overrides") + 1])
    assert overrides["architectures"] == ["AutoDecoForCausalLM"]
    assert overrides["autodeco"] == {"heads": str(heads_dir), "temperature_scale": 0.5, "top_p_scale": 1.0}
    assert argv[-2:] == ["--seed", "3"]  # what follows -- comes last
    # The Python call makes the same argv as the command.
    python = serve_command_line(
        ServeArgs(
            str(tiny_model_dir), str(heads_dir), port=8123, dtype="float32", max_model_len=512, temperature_scale=0.5
        ),
        ("--seed", "3"),
    )
    assert python[1:] == argv[1:]


def test_serve_bounds_the_cpu_kv_cache_unless_the_user_chose_a_size():
    assert server_environment((), {}) == {"VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB)}
    assert server_environment((), {"VLLM_CPU_KVCACHE_SPACE": "8"}) == {}
    assert server_environment(("--kv-cache-memory-bytes", "8G"), {}) == {}
    assert server_environment(("--kv-cache-memory-bytes=8G",), {}) == {}
    out = CliRunner().invoke(cli, ["serve", "--print-command"], env={"VLLM_CPU_KVCACHE_SPACE": ""})
    assert out.output.startswith(f"VLLM_CPU_KVCACHE_SPACE={CPU_KV_CACHE_GIB} "), out.output


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--port", "0"], "`--port` has to be an int in [1, 65535], but is 0"),
        (["--port", "70000"], "`--port` has to be an int in [1, 65535], but is 70000"),
        (["--max-model-len", "0"], "`--max-model-len` has to be a positive int, but is 0"),
        (["--temperature-scale", "-1"], "`--temperature-scale` has to be a positive float, but is -1.0"),
        (["--top-p-scale", "0"], "`--top-p-scale` has to be a positive float, but is 0.0"),
        (["--host", ""], "`--host` has to be an address"),
    ],
)
def test_serve_refuses_bad_options_before_resolving_the_model(flags, fragment):
    _refused(["serve", "--model", "no/such-model", "--print-command", *flags], fragment)


def test_serve_args_refuse_a_dtype_vllm_does_not_know():
    with pytest.raises(ValueError, match="`--dtype` has to be one of auto, half, .* but is 'fp8'"):
        ServeArgs(dtype="fp8")


# ------------------------------------------------------------------------------- the engine's start-up


def test_an_autodeco_engine_on_a_cpu_gets_a_bounded_kv_cache_and_says_so(caplog):
    cache = SimpleNamespace(kv_cache_memory_bytes=None)
    with caplog.at_level(logging.INFO, logger="vllm.autodeco_lp"):
        logging.getLogger("vllm.autodeco_lp").propagate = True  # vLLM's config may have cut it from the root
        assert bound_cpu_kv_cache(cache, on_cpu=True) == CPU_KV_CACHE_GIB * 2**30
    assert cache.kv_cache_memory_bytes == CPU_KV_CACHE_GIB * 2**30
    assert f"KV cache bounded to {CPU_KV_CACHE_GIB} GiB on this CPU" in caplog.text
    assert "VLLM_CPU_KVCACHE_SPACE" in caplog.text and "kv_cache_memory_bytes" in caplog.text
    chosen = SimpleNamespace(kv_cache_memory_bytes=123)  # the user's size (or VLLM_CPU_KVCACHE_SPACE) is kept
    assert bound_cpu_kv_cache(chosen, on_cpu=True) is None and chosen.kv_cache_memory_bytes == 123
    gpu = SimpleNamespace(kv_cache_memory_bytes=None)  # on a GPU vLLM's own sizing stays
    assert bound_cpu_kv_cache(gpu, on_cpu=False) is None and gpu.kv_cache_memory_bytes is None


def test_the_heads_log_line_names_the_source_width_and_switches():
    from autodeco_lp.inference.settings import DecodingSettings

    heads = random_heads(hidden=48, enable_top_p_head=False)
    line = heads_log_line("org/heads", heads.config, DecodingSettings(temperature_scale=0.8))
    assert line == (
        "AutoDeco heads: org/heads (hidden size 48; temperature head on, top-p head off (not in the checkpoint); "
        "temperature_scale 0.8, top_p_scale 1)"
    )
    both = random_heads(hidden=48)
    assert "temperature head off (switched off), top-p head on" in heads_log_line(
        "dir", both.config, DecodingSettings(use_temperature_head=False)
    )


# ----------------------------------------------------------------------------------------------- plot


def _results(tmp_path, samples: int):
    ks = {"1": 0.4, **({"2": 0.55, "4": 0.7} if samples >= 4 else {})}
    line = {"pass@1": 0.4, "pass@1_std": 0.0, "pass@k": ks, "temperature": None, "top_p": None}
    report = {"settings": {"task": "t", "samples": samples}, "methods": {"autodeco": line, "greedy": line}}
    (tmp_path / "results.json").write_text(json.dumps(report))
    return tmp_path


def test_plot_passk_creates_the_folder_of_out(tmp_path):
    require("matplotlib")
    out = tmp_path / "no" / "such" / "dir" / "p.png"
    result = CliRunner().invoke(cli, ["plot", "passk", "--results", str(_results(tmp_path, 4)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_plot_passk_refuses_results_without_a_k_above_one(tmp_path):
    out = tmp_path / "p.png"
    _refused(
        ["plot", "passk", "--results", str(_results(tmp_path, 1)), "--out", str(out)],
        "no method in these results has pass@k for a k > 1 (1 sample(s) per problem",
        "--samples 2 or more",
    )
    assert not out.exists()


def test_plot_out_that_is_a_folder_is_refused(tmp_path):
    _refused(["plot", "passk", "--results", str(_results(tmp_path, 4)), "--out", str(tmp_path)], "is a folder")


def test_plot_options_without_a_default_are_required(tmp_path):
    result = CliRunner().invoke(cli, ["plot", "passk", "--results", str(tmp_path)])
    assert result.exit_code == 2 and "Missing option '--out'" in result.output


def test_plot_top_p_refuses_a_negative_max_rows_before_loading_the_model(tmp_path):
    args = ["plot", "top-p", "--model", "no/such-model", "--data", "x.jsonl", "--out", str(tmp_path / "p.png")]
    _refused([*args, "--max-rows", "-1"], "`--max-rows` has to be a positive int, but is -1")
    _refused([*args, "--max-length", "0"], "`--max-length` has to be a positive int, but is 0")


# ---------------------------------------------------------------------------------------------- bench


def test_bench_refuses_a_batch_that_cannot_be_allocated_before_generating(tiny_model_dir, heads_dir, monkeypatch):
    from autodeco_lp.evaluation import bench

    def never(*args, **kwargs):
        raise AssertionError("generate ran")

    monkeypatch.setattr(bench, "timed_generate", never)
    args = ["bench", "generate", "--model", str(tiny_model_dir), "--heads", str(heads_dir), "--device", "cpu"]
    _refused([*args, "--batch-sizes", f"1,{10**9}"], f"`--batch-sizes` holds {10**9}", "GiB is available on cpu")


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
def test_bench_refuses_a_device_torch_cannot_use():
    _refused(["bench", "generate", "--model", "no/such-model", "--device", "cuda:7"], "`--device` is 'cuda:7'")
    _refused(["bench", "generate", "--device", "gpu0"], "`--device` has to be a torch device")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--batch-sizes", "1,x"], "`--batch-sizes` has to list positive ints, but is '1,x'"),
        (["--batch-sizes", "0"], "`--batch-sizes` has to list positive ints, but is '0'"),
        (["--repeats", "0"], "`--repeats` has to be a positive int, but is 0"),
        (["--new-tokens", "-2"], "`--new-tokens` has to be a positive int, but is -2"),
    ],
)
def test_bench_refuses_bad_counts_before_loading_the_model(flags, fragment):
    _refused(["bench", "generate", "--model", "no/such-model", *flags], fragment)
