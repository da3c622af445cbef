"""The baselines the SPT paper compares, under the shared harness (spt_bench.methods):

- ``text-prompt`` (baselines.text_prompt): no training, persona in a textual prompt;
- ``full-ft`` (baselines.full_ft): every backbone weight trained on the response tokens;
- ``prompt-tuning`` (baselines.prompt_tuning): one soft prompt over the frozen LM (SPT, K = 1);
- ``lora`` (baselines.lora): LoRA adapters through peft.

The registry (`spt_bench.methods.list_methods`) imports these modules on first use, so importing
this package costs nothing.
"""
