"""What a run ran on: package versions, git commit, device (written to env.json)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = (
    "spt-bench", "torch", "transformers", "tokenizers", "peft", "accelerate", "safetensors",
    "datasets", "sacrebleu", "rouge-score", "bert-score", "nltk", "numpy", "gguf",
)  # fmt: skip
REPO = Path(__file__).resolve().parents[1]


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info(repo: Path = REPO) -> dict[str, Any]:
    """Commit and dirty flag of the spt-bench checkout (None outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def device_info(device: Any = None) -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_available"] = torch.cuda.is_available()
        if device is not None:
            info["device"] = str(device)
            if getattr(device, "type", None) == "cuda":
                idx = device.index if device.index is not None else torch.cuda.current_device()
                info["gpu_name"] = torch.cuda.get_device_name(idx)
                info["gpu_memory_gb"] = round(
                    torch.cuda.get_device_properties(idx).total_memory / 2**30, 1
                )
                info["cuda_version"] = torch.version.cuda
    except ImportError:
        pass
    return info


def collect_env(device: Any = None, dtype: Any = None) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_info(),
        "device": device_info(device),
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "argv": sys.argv,
    }
