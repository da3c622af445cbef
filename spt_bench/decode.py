"""The one decoding path every method goes through.

- Prompts are tokenised by the method's PromptFormatter, sorted by length (longest first, so an
  out-of-memory shows up on the first batch) and batched; each batch is left-padded.
- The method's `prefix_embeds` gives each row its soft-prompt prefix (or none); a row is laid out
  as ``[pad..., prefix, prompt]``, positions counted over attended tokens only. A per-layer
  key/value prefix (prefix tuning) pre-fills the KV cache instead, as P attended columns before
  the row (`prefixed_inputs`); only the `hf` engine and greedy/sample decoding take it, and a
  method's `engine_refusal` says so before any work.
- Greedy by default, at most `max_new_tokens` (32, the paper's setting) new tokens; sampling
  (temperature, top-p; seeded) and beam search (through `model.generate` with inputs_embeds) are
  options. Greedy and sampling use our own loop with a KV cache: a row stops at EOS, at a token
  containing a newline, or once its text has started another turn (" Q:", " R:", "User:"... -
  where post-processing cuts anyway, so what follows could not change the cleaned response;
  `turn_ended`), and finished rows are dropped from the batch (and from the KV cache) so they
  cost nothing while the others continue.
- Post-processing (`clean_response`, `spt_bench.postprocess`, which documents both rules):
  decode without special tokens, cut at the first newline and where the model starts another
  turn, strip role markers. The raw text is kept in `raw_prediction`; every stop rule above
  fixes the cleaned text under both clean rules, so either can be applied to it later.
- Rows are appended to predictions.jsonl as each batch finishes; a resumed decode skips ids
  already written (a truncated last line from a kill is dropped first), so no row is redone or
  duplicated. When all rows are there the file is rewritten in dataset order.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.batches import longest_first
from spt_bench.config import DecodeConfig
from spt_bench.errors import ConfigError
from spt_bench.io import append_jsonl, atomic_write_text, read_jsonl
from spt_bench.postprocess import clean_response, turn_ended  # noqa: F401 - re-exported
from spt_bench.progress import ProgressBar

CHUNK = 256  # vllm engine: rows per vLLM generate call (appended to predictions.jsonl after each)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from spt_bench.batches import GenBatch
    from spt_bench.data.example import Example
    from spt_bench.data.formatting import PromptFormatter
    from spt_bench.methods import Method
    from spt_bench.models import Backbone, StopTokens


# Above this many new tokens a run gets a warning with its worst-case decoding volume: ConvAI2
# responses are ~12 words (under 32 tokens, the paper's cap), so a larger cap only matters
# when a model does not stop, and then every row runs to the cap.
LONG_DECODE_TOKENS = 256
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def model_context_length(model: Any) -> int | None:
    """The longest sequence a model takes: from an int, an HF config, an HF model or a
    Backbone (`.model.config`); None when the config does not say."""
    if isinstance(model, int):
        return model
    config = getattr(getattr(model, "model", model), "config", model)
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_max_new_tokens(
    model: Any,
    max_input_tokens: int,
    max_new_tokens: int,
    *,
    prefix_tokens: int = 0,
    n_examples: int | None = None,
) -> str | None:
    """Validate `max_new_tokens` against the model's context before any decoding.

    `model`: a Backbone, an HF model or config, or the context length itself; `prefix_tokens`:
    soft-prompt tokens put before the input (SPT/prompt tuning: prompt_len). Raises ConfigError
    when the cap is below 1 or prompt + input + new tokens exceed the context; returns a warning
    line with the worst-case number of decoding steps when the cap is above LONG_DECODE_TOKENS,
    else None.
    """
    if max_new_tokens < 1:
        raise ConfigError(f"decode.max_new_tokens must be >= 1, got {max_new_tokens}")
    context = model_context_length(model)
    longest = max_input_tokens + prefix_tokens + max_new_tokens
    if context is not None and longest > context:
        room = context - max_input_tokens - prefix_tokens
        prefix = f" + {prefix_tokens} soft-prompt tokens" if prefix_tokens else ""
        raise ConfigError(
            f"decode.max_new_tokens {max_new_tokens}: with data.max_input_tokens "
            f"{max_input_tokens}{prefix} "
            f"a sequence could reach {longest} tokens, over the model's context of {context}; "
            f"use at most {max(room, 0)}"
        )
    if max_new_tokens <= LONG_DECODE_TOKENS:
        return None
    volume = (
        f"{n_examples * max_new_tokens:,} generated tokens ({n_examples} examples x "
        f"{max_new_tokens})"
        if n_examples
        else f"{max_new_tokens} generated tokens per example"
    )
    return (
        f"--max-new-tokens {max_new_tokens} is far above ConvAI2 response lengths (the paper "
        f"uses 32): a model that does not stop at a newline or EOS runs every row to the cap, "
        f"up to {volume}, each step slower as the KV cache grows"
    )


@dataclass
class DecodeSettings(DecodeConfig):
    """The run config's `decode` section plus the run's seed (sampling): a knob added to
    DecodeConfig reaches the decoder with no other edit."""

    seed: int = 0

    @classmethod
    def from_config(cls, decode: DecodeConfig, seed: int) -> DecodeSettings:
        return cls(**dataclasses.asdict(decode), seed=seed)

    @property
    def vllm(self) -> Any:
        """The vllm engine's options (spt_bench.vllm_engine.VllmOptions) from the vllm_* keys."""
        from spt_bench.vllm_engine import VllmOptions

        return VllmOptions(
            kv_cache_gb=self.vllm_kv_cache_gb,
            tensor_parallel_size=self.vllm_tensor_parallel_size,
            data_parallel_size=self.vllm_data_parallel_size,
        )


@dataclass
class DecodeStats:
    n_decoded: int = 0
    n_skipped: int = 0
    seconds: float = 0.0
    new_tokens: int = 0
    batch_size: int | None = None  # the batch size in use at the end (after OOM halvings)
    oom_halvings: int = 0
    engine: str = "hf"
    engine_start_s: float = 0.0  # vllm engine: start (and weight export) time, not in `seconds`

    @property
    def responses_per_s(self) -> float | None:
        return self.n_decoded / self.seconds if self.seconds > 0 else None

    def to_json(self) -> dict:
        return {
            "n_decoded": self.n_decoded,
            "n_resumed": self.n_skipped,
            "seconds": round(self.seconds, 3),
            "new_tokens": self.new_tokens,
            "responses_per_s": self.responses_per_s,
            "batch_size": self.batch_size,
            "oom_halvings": self.oom_halvings,
            "engine": self.engine,
            "engine_start_s": round(self.engine_start_s, 3),
        }


# ---------------------------------------------------------------------------- batch layout


def build_prefixed_inputs(
    method: Method, batch: GenBatch
) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """(inputs_embeds [B,L+T,d], attention_mask, row_info) with rows [pad..., prefix, prompt],
    for methods without a per-layer key/value prefix (see `prefixed_inputs`)."""
    embeds, mask, row_info, cache = prefixed_inputs(method, batch)
    if cache is not None:
        raise ConfigError(
            f"method {method.name!r} has a per-layer key/value prefix; this code path takes "
            "input-embedding prefixes only"
        )
    return embeds, mask, row_info


def prefixed_inputs(
    method: Method, batch: GenBatch
) -> tuple[torch.Tensor, torch.Tensor, list[dict], Any]:
    """(inputs_embeds [B,L+T,d], attention_mask, row_info, cache) with rows
    [pad..., prefix, prompt]. When the method supplies a per-layer `KVPrefix` of P positions,
    `cache` is a fresh KV cache holding it and the mask has P leading ones for it (so
    positions, counted over attended columns, start at P); otherwise `cache` is None."""
    embeds, mask, row_info, kv = _embedding_prefixed(method, batch)
    if kv is None:
        return embeds, mask, row_info, None
    if kv.batch_size != embeds.shape[0]:
        raise ValueError(f"KV prefix has {kv.batch_size} rows for a batch of {embeds.shape[0]}")
    return embeds, kv.extend_mask(mask), row_info, kv.to_cache(embeds.dtype)


def _embedding_prefixed(method: Method, batch: GenBatch) -> tuple[Any, Any, list[dict], Any]:
    import torch

    backbone = method.backbone
    embeds = backbone.embed(batch.input_ids)
    mask = batch.attention_mask
    out = method.prefix_embeds(batch)
    row_info = out.row_info or [{} for _ in range(len(batch))]
    if out.embeds is None:
        return embeds, mask, row_info, out.kv
    prefix = out.embeds.to(dtype=embeds.dtype)
    n_pre = prefix.shape[1]
    t = embeds.shape[1]
    combined = torch.cat([prefix, embeds], dim=1)  # [prefix, pad..., prompt]
    # Move each row's padding in front of its prefix: column j takes combined[:, src[j]].
    pads = (t - mask.sum(dim=1)).unsqueeze(1)  # [B,1]
    j = torch.arange(t + n_pre, device=embeds.device).unsqueeze(0)  # [1,T+L]
    src = torch.where(j < pads, j + n_pre, torch.where(j < pads + n_pre, j - pads, j))
    embeds = combined.gather(1, src.unsqueeze(-1).expand(-1, -1, combined.shape[-1]))
    mask = (j >= pads).to(mask.dtype)  # [B,T+L]: 0 on the padding, 1 on prefix + prompt
    return embeds, mask, row_info, out.kv


# ---------------------------------------------------------------------------- generation


def _sample_next(
    logits: torch.Tensor, s: DecodeSettings, gen: torch.Generator | None
) -> torch.Tensor:
    import torch

    if s.mode == "greedy":
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / s.temperature, dim=-1)
    if s.top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        cum = sorted_p.cumsum(dim=-1)
        drop = cum - sorted_p > s.top_p  # keep the smallest set whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    choice = torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1)
    return choice.to(logits.device)


def row_stop(token: int, output: list[int], stops: StopTokens, tokenizer: Any) -> str | None:
    """The per-row stopping rule every engine applies to each new token: record it in `output`
    (not an EOS) and return why the row stops now, or None. EOS and newline tokens stop the
    row; a ':' token (every next-turn marker ends with one) stops it when the text now holds
    the start of another turn (`turn_ended`) - decoding the row's text only then keeps this
    cheap."""
    if token in stops.eos:
        return "eos"
    output.append(token)
    if token in stops.newline:
        return "newline"
    if token in stops.colon and turn_ended(tokenizer.decode(output, skip_special_tokens=True)):
        return "turn"
    return None


class RowTracker:
    """Per-row outputs and stop reasons of one batch of the hf engine: `advance` takes
    the step's new token of each batch position (`rows[i]` = the original row at position i,
    None once finished - `advance` sets it when the row stops) and returns the positions still
    running."""

    def __init__(self, backbone: Backbone, n_rows: int) -> None:
        from spt_bench.models import stop_tokens

        self.stops = stop_tokens(backbone)
        self.tokenizer = backbone.tokenizer
        self.outputs: list[list[int]] = [[] for _ in range(n_rows)]
        self.reasons = ["length"] * n_rows

    def advance(self, tokens: list[int], rows: list[int | None]) -> list[int]:
        running = []
        for i, token in enumerate(tokens):
            row = rows[i]
            if row is None:
                continue
            reason = row_stop(token, self.outputs[row], self.stops, self.tokenizer)
            if reason is None:
                running.append(i)
            else:
                self.reasons[row] = reason
                rows[i] = None
        return running


def check_method_engine(method: Any, s: DecodeSettings) -> None:
    """Raise the method's one-line refusal when `s.engine` / `s.mode` cannot serve it (objects
    that only duck-type the Method API, without `engine_refusal`, are served by every engine)."""
    refusal_of = getattr(method, "engine_refusal", None)
    refusal = refusal_of(s.engine, s.mode) if refusal_of is not None else None
    if refusal is not None:
        raise ConfigError(refusal)


def generate_batch(
    method: Method, batch: GenBatch, s: DecodeSettings, gen: torch.Generator | None = None
) -> tuple[list[list[int]], list[str], list[dict]]:
    """New token ids per row (stop token excluded), stop reason per row, row_info per row."""
    check_method_engine(method, s)
    embeds, mask, row_info, cache = prefixed_inputs(method, batch)
    if s.mode == "beam":
        return _beam(method, embeds, mask, s) + (row_info,)
    return _generate_hf(method.backbone, embeds, mask, s, gen, cache) + (row_info,)


def _generate_hf(
    backbone: Backbone,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    s: DecodeSettings,
    gen: torch.Generator | None,
    cache: Any = None,
) -> tuple[list[list[int]], list[str]]:
    """The `hf` engine: transformers' forward with a DynamicCache (pre-filled with the method's
    per-layer key/value prefix, if any; `mask` then covers it); finished rows are dropped from
    the batch and the cache at once."""
    import torch

    rows = RowTracker(backbone, embeds.shape[0])
    alive = list(range(embeds.shape[0]))  # original row of each live row
    positions = mask.long().sum(dim=1, keepdim=True)  # next position id per live row
    hidden, cache = backbone.forward_base(embeds, mask, cache=cache, use_cache=True)
    logits = backbone.lm_head(hidden[:, -1])
    for step in range(s.max_new_tokens):
        nxt = _sample_next(logits, s, gen)
        keep = rows.advance(nxt.tolist(), alive)  # the step's one host sync
        if not keep or step == s.max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            sel = torch.tensor(keep, device=embeds.device)
            cache.batch_select_indices(sel)
            alive = [alive[i] for i in keep]
            nxt, mask, positions = nxt[sel], mask[sel], positions[sel]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        step_embeds = backbone.embed(nxt.unsqueeze(1))
        hidden, cache = backbone.forward_base(
            step_embeds, mask, position_ids=positions, cache=cache, use_cache=True
        )
        positions = positions + 1
        logits = backbone.lm_head(hidden[:, -1])
    return rows.outputs, rows.reasons


def _beam(
    method: Method, embeds: torch.Tensor, mask: torch.Tensor, s: DecodeSettings
) -> tuple[list[list[int]], list[str]]:
    """Beam search through transformers' generate; newline tokens act as extra EOS ids."""
    from spt_bench.models import stop_tokens

    backbone = method.backbone
    stops = stop_tokens(backbone)
    stop, newline_ids = sorted(stops.eos), sorted(stops.newline)
    out = backbone.model.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        max_new_tokens=s.max_new_tokens,
        num_beams=s.num_beams,
        do_sample=False,
        eos_token_id=stop + newline_ids,
        pad_token_id=backbone.pad_token_id,
    )
    results, reasons = [], []
    for row in out.tolist():
        toks: list[int] = []
        reason = "length"
        for t in row:
            if t in stop:
                reason = "eos"
                break
            if t == backbone.pad_token_id:
                break
            toks.append(t)
            if t in newline_ids:
                reason = "newline"
                break
        results.append(toks)
        reasons.append(reason)
    return results, reasons


# ---------------------------------------------------------------------------- the decode loop


def prediction_row(
    example: Example, raw: str, reason: str, n_tokens: int, info: dict, clean: str = "default"
) -> dict:
    row = {
        "id": example.id,
        "dialog_id": example.dialog_id,
        "turn": example.turn,
        "persona": list(example.persona),
        "history": list(example.history),
        "reference": example.response,
        "prediction": clean_response(raw, clean),
        "raw_prediction": raw,
        "stop": reason,
        "n_new_tokens": n_tokens,
    }
    row.update(info)
    return row


def existing_prediction_ids(path: Path) -> set[str]:
    """Ids already in a predictions file. A truncated last line (a kill mid-write) and any
    duplicate rows are removed from the file first, so appending continues cleanly."""
    if not path.is_file():
        return set()
    raw = path.read_bytes()
    rows = list(read_jsonl(path, tolerate_truncated_tail=True))
    seen: dict[str, dict] = {}
    for r in rows:
        seen.setdefault(str(r.get("id")), r)
    if len(seen) != len(rows) or (raw and not raw.endswith(b"\n")):
        import json

        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in seen.values())
        atomic_write_text(path, text)
    return set(seen)


def _append_rows(
    out_path: Path, todo: list[Example], idx: list[int], toks: list[list[int]],
    reasons: list[str], infos: list[dict], backbone: Backbone, stats: DecodeStats, bar: Any,
    clean: str = "default",
) -> None:  # fmt: skip
    """Append the prediction rows of one finished batch (or vLLM chunk) to `out_path`."""
    texts = backbone.tokenizer.batch_decode(toks, skip_special_tokens=True)
    rows = [
        prediction_row(todo[i], texts[j], reasons[j], len(toks[j]), infos[j], clean)
        for j, i in enumerate(idx)
    ]
    append_jsonl(out_path, rows)
    stats.n_decoded += len(rows)
    stats.new_tokens += sum(len(t) for t in toks)
    if bar is not None:
        bar.advance(len(rows))


class HfEngine:
    """The `hf` engine: transformers' forward under the method's prefix (`generate_batch`), one
    batch of the longest-first order at a time; on CUDA out-of-memory the batch is halved and
    the same rows retried (longest first, so this happens on the first batches)."""

    name = "hf"
    engine_start_s = 0.0

    def __init__(self, method: Method, settings: DecodeSettings, *, console: Any = None) -> None:
        import torch

        self.method, self.settings, self.console = method, settings, console
        self.batch_size = settings.batch_size
        self.oom_halvings = 0
        seeded = settings.mode == "sample"
        self.gen = torch.Generator().manual_seed(settings.seed) if seeded else None

    def chunk(
        self, order: list[int], start: int, prompts: list[list[int]], rows: list[Example]
    ) -> tuple[list[int], list, list, list] | None:
        """(row indices, new tokens, stop reasons, row infos) of the next batch from `start`;
        None when the batch ran out of memory (retry from the same `start`)."""
        import torch

        from spt_bench.data.formatting import collate_generate
        from spt_bench.models import autocast

        backbone = self.method.backbone
        idx = order[start : start + self.batch_size]
        batch = collate_generate(
            [prompts[i] for i in idx], backbone.pad_token_id, [rows[i] for i in idx]
        ).to(backbone.device)
        try:
            with torch.inference_mode(), autocast(backbone.device):
                return (idx, *generate_batch(self.method, batch, self.settings, self.gen))
        except torch.OutOfMemoryError:
            if self.batch_size == 1:
                raise
        del batch  # outside the except block, so the failed batch's tensors can be freed
        torch.cuda.empty_cache()
        self.batch_size = max(1, self.batch_size // 2)
        self.oom_halvings += 1
        if self.console is not None:
            self.console.print(
                f"[yellow]decode: out of GPU memory; batch size -> {self.batch_size}"
            )
        return None

    def close(self) -> None:
        pass


def decode(
    method: Method,
    formatter: PromptFormatter,
    examples: list[Example],
    settings: DecodeSettings,
    out_path: str | Path,
    *,
    progress: bool = False,
    console: Any = None,
    open_engine: Any = None,
) -> tuple[list[dict], DecodeStats]:
    """Decode `examples` into `out_path` (resuming it) and return all rows in dataset order.

    `open_engine(method, settings, prompts, work_dir, console)` opens the engine that decodes
    the chunks (`spt_bench.engines` chooses it from the settings); without one, the hf engine."""
    out_path = Path(out_path)
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise ConfigError("duplicate example ids in the evaluation split")
    done = existing_prediction_ids(out_path)
    unknown = done - set(ids)
    if unknown:
        raise ConfigError(
            f"{out_path} holds predictions for ids not in this evaluation split "
            f"(e.g. {sorted(unknown)[0]!r}); use a fresh run folder or --overwrite"
        )
    if open_engine is None and settings.engine != "hf" and settings.mode != "beam":
        raise ConfigError(
            f"spt_bench.decode.decode runs the hf engine; decode with {settings.engine!r} "
            "through spt_bench.engines.decode"
        )
    todo = [ex for ex in examples if ex.id not in done]
    stats = DecodeStats(n_skipped=len(done), engine=settings.engine)
    check_method_engine(method, settings)  # before any row is decoded
    prompts = [formatter.prompt_ids(ex) for ex in todo]
    order = longest_first([len(p) for p in prompts])
    method.set_train_mode(False)
    if not todo:
        engine: Any = None
    elif open_engine is not None:
        engine = open_engine(method, settings, prompts, out_path.parent, console)
    else:
        engine = HfEngine(method, settings, console=console)
    bar = ProgressBar(console, "decode", len(examples), len(done)) if progress and todo else None
    t0 = time.perf_counter()
    start = 0
    try:
        while start < len(order):
            got = engine.chunk(order, start, prompts, todo)
            if got is None:
                continue
            idx, toks, reasons, infos = got
            start += len(idx)
            _append_rows(out_path, todo, idx, toks, reasons, infos, method.backbone, stats, bar,
                         settings.clean)  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    stats.seconds = time.perf_counter() - t0
    stats.batch_size = getattr(engine, "batch_size", settings.batch_size)
    stats.oom_halvings = getattr(engine, "oom_halvings", 0)
    if engine is not None:  # an engine's start is reported apart from decoding
        stats.engine_start_s = engine.engine_start_s
        stats.seconds -= engine.engine_start_s
    return _in_dataset_order(out_path, ids, rewrite=bool(todo)), stats


def _in_dataset_order(out_path: Path, ids: list[str], *, rewrite: bool) -> list[dict]:
    """The rows of `out_path` in `ids` order; the file itself rewritten in that order when
    rows were added or it is out of order."""
    import json

    by_id = {r["id"]: r for r in read_jsonl(out_path)}
    ordered = [by_id[i] for i in ids]
    if rewrite or len(by_id) != len(ids) or list(by_id) != ids:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered)
        atomic_write_text(out_path, text)
    return ordered
