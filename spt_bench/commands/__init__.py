"""The `spt-bench` command line, one module per concern: data, score, run (run, evaluate,
methods, presets), compare (compare and plots), chat, bench; `spt_bench.commands.app.app` is
the Typer app (entry point `spt-bench`), `base` what every command shares."""
