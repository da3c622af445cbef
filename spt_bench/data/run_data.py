"""The examples a run uses: its data's train/dev/test splits (spt_bench.data.splits) cut to
the config's limits by seeded subsets (spt_bench.data.sampling), the same for every method."""

from __future__ import annotations

from typing import Any

# How each limit samples (spt_bench/data/sampling.py): the test subset is whole dialogues so
# that turn analyses of small runs cover every turn; recorded in the run's data description.
LIMIT_SAMPLERS = {"train": "examples", "dev": "examples", "test": "dialogues"}


def limit_examples(examples: list, n: int | None, seed: int, sampler: str = "examples") -> list:
    """A seeded subset of n examples in their original order (same for every method)."""
    from spt_bench.data.sampling import sample_dialogues, sample_examples

    pick = sample_dialogues if sampler == "dialogues" else sample_examples
    return pick(examples, n, seed)


def load_run_data(config: Any) -> tuple[list, list, list, dict]:
    """(train, dev, test, description) of a RunConfig, limits applied."""
    from spt_bench.data.splits import splits_for_config

    data = config.data
    splits = splits_for_config(data)
    seed, how = data.split_seed, {**LIMIT_SAMPLERS, "test": data.eval_sampler}
    train = limit_examples(splits.train, data.train_limit, seed, how["train"])
    dev = limit_examples(splits.dev, data.dev_limit, seed, how["dev"])
    test = limit_examples(splits.test, data.eval_limit, seed, how["test"])
    desc = dict(splits.description)
    desc["used"] = {"train": len(train), "dev": len(dev), "test": len(test)}
    desc["limits"] = {
        "train_limit": data.train_limit,
        "dev_limit": data.dev_limit,
        "eval_limit": data.eval_limit,
        "samplers": how,
    }
    return train, dev, test, desc
