"""Finding, reading and validating VGGT checkpoints (``model.pt`` / ``model.safetensors``).

Nothing is downloaded: ``hf:facebook/VGGT-1B`` resolves only from the local
Hugging Face cache, which the user fills themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from recon.vggt.models.config import VGGTConfig
from recon.vggt.models.vggt import VGGT

_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_LIST_AT_MOST = 8


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the network (names the keys/shapes)."""


def hf_cache_root() -> Path:
    """Hub cache directory: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
    return home / "hub"


def _from_hf_cache(repo: str) -> Path:
    snapshots = hf_cache_root() / f"models--{repo.replace('/', '--')}" / "snapshots"
    ref = snapshots.parent / "refs" / "main"
    preferred = [snapshots / ref.read_text().strip()] if ref.is_file() else []
    dirs = preferred + sorted(p for p in snapshots.glob("*") if p.is_dir())
    for d in dirs:
        for name in ("model.safetensors", "model.pt"):
            if (d / name).is_file():
                return d / name
    raise CheckpointError(
        f"hf:{repo} is not in the local Hugging Face cache (looked for model.safetensors / model.pt under "
        f"{snapshots}). stream4d never downloads weights; fetch them yourself, e.g. "
        f"`huggingface-cli download {repo} model.pt`, or pass the file's path.")


def resolve_weights(weights: str | Path) -> Path:
    """The checkpoint file for a path (file, or directory holding ``model.safetensors``/``model.pt``)
    or ``hf:<owner>/<name>`` (local Hugging Face cache only)."""
    spec = str(weights)
    if spec.startswith("hf:"):
        return _from_hf_cache(spec[3:])
    path = Path(spec).expanduser()
    if path.is_dir():
        for name in ("model.safetensors", "model.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"VGGT checkpoint directory {path} holds neither model.safetensors nor model.pt")
    if not path.is_file():
        raise CheckpointError(f"VGGT checkpoint {path} does not exist")
    if path.suffix not in _SUFFIXES:
        raise CheckpointError(f"VGGT checkpoint {path} has suffix {path.suffix!r}; expected one of {_SUFFIXES}")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file on the CPU (a ``{"model": ...}`` / ``{"state_dict": ...}`` wrapper is opened)."""
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"VGGT checkpoint {path} could not be read (truncated or corrupt?): {e}") from e
    for wrapper in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"VGGT checkpoint {path} holds no state dict (got {type(state).__name__})")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"VGGT checkpoint {path} has non-tensor entries: {_listing(bad)}")
    return dict(state)


def _listing(items: list) -> str:
    shown = ", ".join(str(i) for i in items[:_LIST_AT_MOST])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _LIST_AT_MOST else "")


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], skip_prefixes: tuple[str, ...] = (),
                     source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming missing, unexpected and wrongly shaped keys.

    Keys under ``skip_prefixes`` (disabled heads) are ignored. Works for models on the meta device.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items() if not (skip_prefixes and k.startswith(skip_prefixes))}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [f"{k}: {list(given[k])} (model wants {list(expected[k])})"
             for k in expected if k in given and given[k] != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} keys with the wrong shape: {_listing(wrong)}")
    if problems:
        raise CheckpointError(f"{source} does not match the VGGT network: " + "; ".join(problems))


def load_vggt(weights: str | Path, config: VGGTConfig | None = None) -> VGGT:
    """Build a VGGT network (``config``: a ``VGGTConfig``, default VGGT-1B) and load ``weights`` into it.

    The network is built on the meta device and takes the checkpoint's tensors
    (cast to fp32) by assignment, so loading needs one copy of the weights in
    memory. Keys of disabled heads are skipped explicitly (``model.skipped_keys``).
    Raises :class:`CheckpointError` for a missing, truncated or mismatched checkpoint.
    """
    path = resolve_weights(weights)
    with torch.device("meta"):
        model = VGGT(config=config or VGGTConfig())
    state = read_state_dict(path)
    skip = tuple(f"{name}." for name in model.disabled_heads)
    check_state_dict(model, state, skip, source=f"VGGT checkpoint {path}")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
