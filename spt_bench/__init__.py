"""spt-bench: Selective Prompt Tuning and its baselines under one harness."""

__version__ = "0.1.0"
