"""Checks of single config values, shared by the schema (spt_bench.config) and the commands:
errors that name the dotted key, seeds, hits@k settings, run names."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from spt_bench.errors import ConfigError

# The k for which the scorer reports hits@k (metrics.registry re-exports it).
HITS_KS = (1, 3, 5, 10, 20, 100)
MAX_SEED = 2**32 - 1  # numpy's and torch's CUDA generators take seeds in [0, 2**32)


def check_seed(key: str, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_SEED:
        raise key_error(key, f"must be in [0, {MAX_SEED}], got {value}")


def _finite(v: Any) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


def key_error(key: str, problem: str) -> ConfigError:
    """A ConfigError about config key `key` ("train.lr must be > 0"); `.key` lets the CLI
    name the flag instead."""
    err = ConfigError(f"{key} {problem}")
    err.key = key  # type: ignore[attr-defined]
    return err


def check_hits_settings(hits_k: list[int], hits_candidates: int) -> None:
    """hits@k needs k >= 1 and more candidates than the largest k."""
    if not hits_k or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in hits_k):
        raise key_error("score.hits_k", f"must be integers >= 1, got {hits_k!r}")
    if (
        isinstance(hits_candidates, bool)
        or not isinstance(hits_candidates, int)
        or hits_candidates < 2
    ):
        raise key_error("score.hits_candidates", f"must be >= 2, got {hits_candidates}")
    bad = [k for k in hits_k if k not in HITS_KS]
    if bad:
        raise key_error(
            "score.hits_k", f"hits@{bad[0]} is not reported; choose k from {list(HITS_KS)}"
        )
    if max(hits_k) > hits_candidates:
        raise key_error(
            "score.hits_k",
            f"hits@{max(hits_k)} needs at least {max(hits_k)} candidates "
            f"(score.hits_candidates is {hits_candidates})",
        )


def check_run_name(name: str) -> str:
    """A run name is one plain path component: it can never point outside the output folder."""
    bad = (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith("~")
        or Path(name).is_absolute()
    )
    if bad:
        raise ConfigError(
            f"invalid run name {name!r}: use a single folder name without '/', '\\\\', '..' or '~'"
        )
    return name
