"""`python -m spt_bench ...` = `spt-bench ...` (for launchers that take a module:
`accelerate launch -m spt_bench run ...`, `torchrun -m spt_bench run ...`)."""

from spt_bench.commands.app import app

if __name__ == "__main__":
    app(prog_name="spt-bench")
