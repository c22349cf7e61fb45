"""Checks of command options shared by several option dataclasses: the message names the flag, the value and the fix."""

from __future__ import annotations

import torch


def check_positive_int(flag: str, value: int | None, fix: str) -> None:
    """None passes (an option left out); anything but an int >= 1 is refused."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`{flag}` has to be a positive int, but is {value!r}; {fix}")


def check_torch_device(flag: str, device: str | None) -> None:
    """Refuse, before anything is loaded, a device this torch build cannot use (`cuda:7` on a CPU build or
    with fewer GPUs, a typo), with what there is. None (the default device) is always fine."""
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:  # torch's own message lists the device types
        raise ValueError(f"`{flag}` has to be a torch device such as cpu or cuda:0, but is {device!r} ({exc})") from exc
    if parsed.type != "cuda":
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        build = f"a build for CUDA {torch.version.cuda} that sees no GPU" if torch.version.cuda else "a CPU build"
        raise ValueError(f"`{flag}` is {device!r}, but this torch ({torch.__version__}) is {build}; use --device cpu")
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(
            f"`{flag}` is {device!r}, but torch sees {count} CUDA device(s) (cuda:0 to cuda:{count - 1}); "
            "pass one of those"
        )
