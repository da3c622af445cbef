"""The decoding engines behind one small protocol, chosen here from the settings, outside the
decoder: `hf` (spt_bench.decode.HfEngine) and `vllm` (spt_bench.vllm_engine). An engine has
`chunk(order, start, prompts, rows)` -> (row indices, new tokens, stop reasons, row infos) of
the next rows of the longest-first order (None: retry from `start`), `batch_size`,
`engine_start_s` and `close()`; `spt_bench.decode.decode` drives it and writes the rows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench import decode as decoding

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.data.example import Example
    from spt_bench.decode import DecodeSettings, DecodeStats
    from spt_bench.methods import Method


class VllmEngine:
    """The `vllm` engine: vLLM batches by itself, so it gets chunks of rows (the hf engine's
    batches, so methods see the same prefix inputs), each appended as it finishes."""

    name = "vllm"
    oom_halvings = 0

    def __init__(
        self, method: Method, settings: DecodeSettings, max_prompt_len: int, work_dir: Path
    ) -> None:
        from spt_bench.vllm_engine import VllmDecoder

        self.method, self.settings = method, settings
        self.batch_size = settings.batch_size
        self.decoder = VllmDecoder(method, settings, work_dir, max_prompt_len, decoding.row_stop)

    @property
    def engine_start_s(self) -> float:
        return self.decoder.engine_start_s

    def chunk(
        self, order: list[int], start: int, prompts: list[list[int]], rows: list[Example]
    ) -> tuple[list[int], list, list, list]:
        from spt_bench.data.formatting import collate_generate

        backbone, bs = self.method.backbone, self.batch_size
        idx = order[start : start + max(decoding.CHUNK, bs)]
        batches = [
            collate_generate([prompts[i] for i in idx[k : k + bs]], backbone.pad_token_id,
                             [rows[i] for i in idx[k : k + bs]]).to(backbone.device)
            for k in range(0, len(idx), bs)
        ]  # fmt: skip
        return (idx, *self.decoder.generate(batches))

    def close(self) -> None:
        pass


def open_engine(
    method: Method, settings: DecodeSettings, prompts: list[list[int]], work_dir: Path,
    console: Any = None,
) -> Any:  # fmt: skip
    """The engine `settings` name (beam search always runs in the hf engine)."""
    if settings.engine == "vllm" and settings.mode != "beam":
        return VllmEngine(method, settings, max(len(p) for p in prompts), work_dir)
    return decoding.HfEngine(method, settings, console=console)


def decode(
    method: Method,
    formatter: Any,
    examples: list[Example],
    settings: DecodeSettings,
    out_path: str | Path,
    *,
    progress: bool = False,
    console: Any = None,
) -> tuple[list[dict], DecodeStats]:
    """`spt_bench.decode.decode` with the engine the settings name."""
    return decoding.decode(method, formatter, examples, settings, out_path, progress=progress,
                           console=console, open_engine=open_engine)  # fmt: skip


def shutdown(settings: DecodeSettings) -> None:
    """Free an engine's memory and processes once a split is decoded (vllm keeps its engine
    cached between calls of one process until then)."""
    if settings.engine == "vllm":
        from spt_bench.vllm_engine import shutdown_engine

        shutdown_engine()
