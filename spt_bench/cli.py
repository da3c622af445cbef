"""`python -m spt_bench.cli ...` (e.g. under `accelerate launch -m spt_bench.cli run ...`)."""

from cli import app

if __name__ == "__main__":
    app()
