"""`spt-bench bench`: speed and memory of our training step, decoding and scoring, measured in one
process on the same inputs against plain PyTorch / transformers.

What is measured (docs/performance.md explains how to read it):

- training: one optimiser step (forward, backward, AdamW) on the same batch of `batch_size`
  examples for every method whose `bench` hook puts it in the default benchmark (today `spt`,
  K prompts, default 4, and `prompt-tuning`), through `Method.training_loss` exactly as the
  shared loop runs it (bf16 autocast on CUDA); and the plain reference: the same
  batch with the same soft prompts prepended through `inputs_embeds`, all K prompts as one batch
  of K x B sequences, loss from `model(...).loss` (full-vocabulary logits at every position).
  Median step time over `reps` steps after `warmup` steps, examples/s, tokens/s (non-padding
  tokens of the batch, as train_log.jsonl counts them), peak memory (CUDA: max allocated; CPU:
  growth of the peak resident set size while stepping, where Linux lets us reset it) and the
  first step's LM loss (ours vs plain must agree: same prompts, same batch).
- decoding: our evaluation decoding (`spt_bench.decode.decode`, the path `spt-bench run` uses,
  predictions file included) vs plain `model.generate` on the same prompts (same soft-prompt
  prefix through `inputs_embeds`, same batch size, greedy, same `max_new_tokens`, stopping at
  EOS or any newline token via the `eos_token_id` list), as responses/s and their ratio, plus
  the fraction of identical responses. Both sort prompts by length and exclude a warm-up batch.
- scoring: `metrics.score_predictions` on our predictions (BERTScore only with `--bertscore`);
  "n/a" when the scorer's libraries are not installed (e.g. on a bare GPU box).

Modules: `settings` (BenchSettings, flag parsing; the default methods come from the methods'
`bench` hooks, spt_bench.methods.BenchEntry), `profiling` (timing, peak memory, operator
tables), `steps` (our timed training step), `plain` (the plain references: training step and
`model.generate`), `training` (training-step figures and ratios), `batch_size`, `decoding`
and `decode_summary` (decoding figures), `scoring` (scorer figures), `run` (`run_bench`) and
`render` (the one place that renders the tables).
"""

from spt_bench.bench.batch_size import largest_decode_batch
from spt_bench.bench.render import render_bench
from spt_bench.bench.run import run_bench
from spt_bench.bench.settings import BenchSettings, parse_batch_sizes, parse_engines
from spt_bench.bench.steps import build_bench_method

__all__ = [
    "BenchSettings",
    "build_bench_method",
    "largest_decode_batch",
    "parse_batch_sizes",
    "parse_engines",
    "render_bench",
    "run_bench",
]
