"""Raw vLLM: `LLM.generate` on requests built once, untimed - the lower bound of the vllm
engine on the same prompts, on the same (cached) engine, with the same greedy sampling and stop
tokens. Two request kinds: the prompt token ids (no prefix: what a token-prompt method sends),
and the prompt embeddings the engine sends (the method's prefix + the embedded prompt; for a
method without prefix, the embedded prompt). Our engine's time minus raw vLLM's is what the
toolkit adds (formatting, prefix computation, embedding, request building, stop handling,
writing rows).

Also the compute bound: the forward FLOPs of the pass (2 x non-embedding parameters per prompt
and generated token, plus attention over the context) against this machine's measured fp32
GEMM rate, so a figure can say how far an engine is from what the hardware allows.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from spt_bench.data.example import Example

RAW_KINDS = ("prompt ids", "prompt embeds")


class RawVllm:
    """The requests of one kind for `examples` (built on first use) and their timed pass."""

    def __init__(
        self, method: Any, formatter: Any, examples: list[Example], batch_size: int,
        max_new_tokens: int, work_dir: Path, kind: str,
    ) -> None:  # fmt: skip
        from spt_bench.batches import longest_first
        from spt_bench.decode import DecodeSettings, row_stop
        from spt_bench.vllm_engine import VllmDecoder

        assert kind in RAW_KINDS, kind
        self.method, self.kind, self.batch_size = method, kind, batch_size
        self.prompts = [formatter.prompt_ids(ex) for ex in examples]
        self.order = longest_first([len(p) for p in self.prompts])
        self.examples = examples
        settings = DecodeSettings(max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  engine="vllm")  # fmt: skip
        self.decoder = VllmDecoder(method, settings, work_dir, max(map(len, self.prompts)),
                                   row_stop)  # fmt: skip
        self._requests: list[dict] | None = None
        self.prefix_len = 0

    def requests(self) -> list[dict]:
        if self._requests is not None:
            return self._requests
        if self.kind == "prompt ids":
            self._requests = [{"prompt_token_ids": self.prompts[i]} for i in self.order]
            return self._requests
        import torch

        from spt_bench.data.formatting import collate_generate

        backbone, bs = self.method.backbone, self.batch_size
        batches = [
            collate_generate([self.prompts[i] for i in self.order[k : k + bs]],
                             backbone.pad_token_id,
                             [self.examples[i] for i in self.order[k : k + bs]]).to(backbone.device)
            for k in range(0, len(self.order), bs)
        ]  # fmt: skip
        requests, _, _, self.prefix_len = self.decoder.requests(batches)
        with torch.inference_mode():
            for r in requests:  # a method without prefix sent ids: embed them
                if "prompt_token_ids" in r:
                    ids = torch.tensor(r.pop("prompt_token_ids"), device=backbone.device)
                    r["prompt_embeds"] = backbone.embed(ids[None])[0].to(backbone.dtype).cpu()
        self._requests = requests
        return requests

    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts) + self.prefix_len * len(self.prompts)

    def run(self) -> tuple[float, int]:
        """(seconds of LLM.generate, generated tokens); requests and engine are ready first."""
        from spt_bench.vllm_engine import sampling_params

        requests = self.requests()
        engine = self.decoder._engine(self.kind == "prompt embeds", self.prefix_len)
        params = sampling_params(self.decoder.settings, self.decoder.stop_ids(), 0)
        t0 = time.perf_counter()
        outputs = engine.llm.generate(requests, params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        return seconds, sum(len(o.outputs[0].token_ids) for o in outputs)


def gemm_gflops(device: Any, size: int = 1024, reps: int = 5) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s, best of `reps`): the compute bound."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def forward_flops(model: Any, prompt_tokens: list[int], new_tokens: list[int]) -> float:
    """Forward FLOPs of prefilling each prompt and generating its tokens: 2 x non-embedding
    parameters per token plus attention (2 x 2 x layers x hidden per context position)."""
    cfg = model.config
    n_embed = model.get_input_embeddings().weight.numel()
    tied = getattr(cfg, "tie_word_embeddings", False)
    body = sum(p.numel() for p in model.parameters()) - (0 if tied else n_embed)
    head = n_embed  # the LM head's matmul: run for the last prompt position and each new token
    layers, hidden = int(cfg.num_hidden_layers), int(cfg.hidden_size)
    flops = 0.0
    for p, g in zip(prompt_tokens, new_tokens, strict=True):
        tokens = p + g
        attention_positions = (tokens * (tokens + 1)) / 2  # each token attends to its context
        flops += 2 * (body - head) * tokens + 2 * head * (g + 1)
        flops += 4 * layers * hidden * attention_positions
    return flops
