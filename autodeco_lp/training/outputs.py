"""Which files in `--output-dir` a fit may write, the manifest that records what it wrote, and its metrics log.

`autodeco-fit` writes only the names in `OUTPUT_NAMES` (plus `checkpoint-N/` folders and hidden
temporary files), and before it creates one it adds the name to `output_dir/.autodeco-fit.json`
(the manifest). A run refuses to start, before anything is written, when the folder holds:
- a file or folder with one of our names that the manifest does not list (a user's README.md or
  metrics.jsonl, heads copied from elsewhere);
- without `--resume-from-checkpoint`: the final heads or the checkpoints of an earlier run;
unless `--overwrite-output-dir` is given. Other files in the folder are never touched. A
hidden-state cache with its `cache_meta.json` counts as ours: its fingerprint decides whether it is
reused, and `autodeco eval ablation` hard-links finished caches between runs.

The metrics of a running fit go to `metrics.jsonl.partial`; the final save renames it to
`metrics.jsonl` after the heads and the model card are written. So a final save that fails (a full
disk) leaves an earlier run's heads and its `metrics.jsonl` as they were, side by side.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from autodeco_lp.hub.atomic import atomic_write, fsync_file, write_text
from autodeco_lp.hub.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from autodeco_lp.hub.jsonl import jsonl_lines
from autodeco_lp.training.hidden import BUILD_DIR_NAME, CACHE_DIR_NAME, META_NAME

MANIFEST_NAME = ".autodeco-fit.json"
METRICS_NAME = "metrics.jsonl"
METRICS_PARTIAL_NAME = f"{METRICS_NAME}.partial"  # the running fit's lines, renamed to METRICS_NAME at the end
CARD_NAME = "README.md"
TENSORBOARD_DIR_NAME = "runs"
HEADS_NAMES = (CONFIG_NAME, WEIGHTS_NAME)
OUTPUT_NAMES = (
    *HEADS_NAMES,
    CARD_NAME,
    METRICS_NAME,
    METRICS_PARTIAL_NAME,
    CACHE_DIR_NAME,
    BUILD_DIR_NAME,
    TENSORBOARD_DIR_NAME,
)
_CHECKPOINT = re.compile(r"^checkpoint-\d+$")
_OURS_HINT = "pass --overwrite-output-dir to replace them, or choose a new --output-dir"


def _is_output_name(name: str) -> bool:
    return name in OUTPUT_NAMES or bool(_CHECKPOINT.match(name))


class OutputDir:
    """`--output-dir` as this run may use it: `claim` checks it, `register` records what we write."""

    def __init__(self, path: Path, written: set[str], write_manifest: bool, overwrite: bool = False) -> None:
        self.path = path
        self.written = written
        self.write_manifest = write_manifest  # the main process keeps the manifest
        self.overwrite = overwrite  # --overwrite-output-dir: `prepare` drops an earlier run's checkpoints

    @classmethod
    def claim(cls, path: Path, *, resume: bool, overwrite: bool, init_heads: str | None, main: bool) -> OutputDir:
        """Check that this run may write into `path` (see the module docstring); reads only."""
        if path.exists() and not path.is_dir():
            raise ValueError(f"`--output-dir` {str(path)!r} is a file; pass a folder.")
        written = cls._read_manifest(path)
        if init_heads and Path(init_heads).is_dir() and path.is_dir() and Path(init_heads).samefile(path):
            if not overwrite and any((path / name).exists() for name in HEADS_NAMES):
                raise ValueError(
                    f"`--init-heads` and `--output-dir` are the same folder {str(path)!r}: training would replace "
                    "the heads it starts from. Write to a new --output-dir, or pass --overwrite-output-dir."
                )
        if not overwrite and path.is_dir():
            present = sorted(p.name for p in path.iterdir() if _is_output_name(p.name))
            foreign = [name for name in present if name not in written and not cls._is_our_cache(path / name)]
            if foreign:
                raise ValueError(
                    f"`--output-dir` {str(path)!r} holds {foreign}, which autodeco-fit did not write there; "
                    f"they would be replaced. Move them away, {_OURS_HINT}."
                )
            if not resume:
                earlier = [name for name in present if name in HEADS_NAMES or _CHECKPOINT.match(name)]
                if earlier:
                    raise ValueError(
                        f"`--output-dir` {str(path)!r} holds an earlier run's {earlier}. Pass "
                        f"--resume-from-checkpoint to continue it, {_OURS_HINT}."
                    )
        return cls(path, written, write_manifest=main, overwrite=overwrite)

    @staticmethod
    def _is_our_cache(path: Path) -> bool:
        return path.name == CACHE_DIR_NAME and (path / META_NAME).is_file()

    @staticmethod
    def _read_manifest(path: Path) -> set[str]:
        manifest = path / MANIFEST_NAME
        if not manifest.is_file():
            return set()
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            return {str(name) for name in data["written"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{manifest} (the record of what autodeco-fit wrote) cannot be read: {exc}; {_OURS_HINT}."
            ) from exc

    def prepare(self) -> None:
        """Create the folder; with --overwrite-output-dir drop an earlier run's checkpoints (main process)."""
        if not self.write_manifest:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        if self.overwrite:
            for old in self.path.iterdir():
                if _CHECKPOINT.match(old.name) and old.is_dir():
                    shutil.rmtree(old)
        self.register()

    def register(self, *names: str) -> None:
        """Record `names` as ours before they are written (main process; others only read)."""
        if not self.write_manifest or (set(names) <= self.written and (self.path / MANIFEST_NAME).is_file()):
            return
        self.written |= set(names)
        text = json.dumps({"written_by": "autodeco-fit", "written": sorted(self.written)}, indent=1) + "\n"
        atomic_write(self.path / MANIFEST_NAME, lambda p: write_text(p, text))


def _metrics_step(line: str) -> float:
    """The step of one metrics line; infinity for a line a kill left torn (or any unreadable one)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


class MetricsLog:
    """JSONL metrics (and tensorboard) on the main process, into `metrics.jsonl.partial` until `finish`."""

    def __init__(self, outputs: OutputDir, resume_step: int, report_to: str, enabled: bool) -> None:
        self.outputs = outputs
        self.path = outputs.path / METRICS_PARTIAL_NAME
        self.enabled = enabled
        self.writer = None
        self.earlier: list[dict] = []  # the records kept from before a resume, oldest first
        if not enabled:
            return
        outputs.register(METRICS_PARTIAL_NAME, METRICS_NAME)
        # A resumed run keeps the lines up to the step it resumes from: those of the running log, or of a
        # finished run's metrics.jsonl when one of its checkpoints is resumed. A torn last line is dropped.
        source = self.path if self.path.exists() else outputs.path / METRICS_NAME
        lines = jsonl_lines(source.read_text(encoding="utf-8")) if resume_step and source.is_file() else []
        kept = [line for line in lines if _metrics_step(line) <= resume_step]
        self.earlier = [json.loads(line) for line in kept]
        atomic_write(self.path, lambda tmp: write_text(tmp, "".join(line + "\n" for line in kept)))
        if report_to == "tensorboard":
            try:
                # tensorboard is optional (`--report-to tensorboard`): not a dependency of the package.
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
            except ImportError as exc:
                raise ValueError(
                    "`--report-to tensorboard` needs the tensorboard package: pip install tensorboard"
                ) from exc
            outputs.register(TENSORBOARD_DIR_NAME)
            self.writer = SummaryWriter(log_dir=str(outputs.path / TENSORBOARD_DIR_NAME))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])
            self.writer.flush()

    def finish(self) -> None:
        """Make this run's lines `metrics.jsonl` (one rename); the final save calls it once the heads are saved."""
        if not self.enabled:
            return
        if self.writer is not None:
            self.writer.close()
        fsync_file(self.path)
        os.replace(self.path, self.outputs.path / METRICS_NAME)
