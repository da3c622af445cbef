"""Run labels and seed groups: each run is named by its method, the options the method labels
(its `option_labels` hook) and the settings that differ between the compared runs; runs that
differ only in their seed form one group (one table row)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.config import get_dotted

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.compare.runs import RunRecord

# config fields shown in labels only when they differ between the compared runs of one method
# (labelled by their last part, e.g. `lr=`, except those in FIELD_LABELS)
VARYING_FIELDS: tuple[str, ...] = (
    "model.name",
    "seed",
    "train.max_steps",
    "train.epochs",
    "train.lr",
    "data.train_limit",
    "decode.mode",
)


FIELD_LABELS: dict[str, str] = {"model.name": "model"}


def option_labels(method: str) -> dict[str, str]:
    """The short labels of a method's key options (its `option_labels` hook; none for a method
    that is not registered)."""
    from spt_bench.methods import method_class

    cls = method_class(method)
    return dict(cls.option_labels) if cls is not None else {}


def _fmt_setting(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and ("/" in value or os.sep in value):
        return Path(value).name
    return str(value)


def assign_labels(runs: Sequence[RunRecord], *, exclude: Sequence[str] = ()) -> None:
    """Name each run by method + key settings, adding settings that differ between runs of the
    same method (model, seed, steps, method options; not those in `exclude`) and finally the
    folder name if two runs would still share a label."""
    by_method: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    for method, group in by_method.items():
        key_options = option_labels(method)
        option_keys = sorted({k for r in group for k in r.method_options})
        varying_opts = [
            k
            for k in option_keys
            if k not in key_options and len({_freeze(r.method_options.get(k)) for r in group}) > 1
        ]
        varying_fields = [
            f
            for f in VARYING_FIELDS
            if f not in exclude and len({_freeze(_field(r, f)) for r in group}) > 1
        ]
        for run in group:
            parts = [
                f"{key_options[k]}={_fmt_setting(v)}"
                for k, v in run.method_options.items()
                if k in key_options
            ]
            parts += [f"{k}={_fmt_setting(run.method_options.get(k))}" for k in varying_opts]
            parts += [
                f"{_field_label(f)}={_fmt_setting(get_dotted(run.config, f))}"
                for f in varying_fields
            ]
            run.label = method + (f" ({', '.join(parts)})" if parts else "")
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} [{run.path.name}]"


def _field_label(name: str) -> str:
    return FIELD_LABELS.get(name, name.rsplit(".", 1)[-1])


def _seed_order(run: RunRecord) -> tuple:
    seed = run.seed
    numeric = isinstance(seed, (int, float)) and not isinstance(seed, bool) and math.isfinite(seed)
    return (0, seed, "") if numeric else (1, 0, str(seed))


def _field(run: RunRecord, name: str) -> Any:
    return run.seed if name == "seed" else get_dotted(run.config, name)


def _freeze(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class RunGroup:
    """The runs of one setting that differ only in their seed (one row of the table)."""

    runs: list[RunRecord]
    label: str = ""

    @property
    def lead(self) -> RunRecord:
        return self.runs[0]

    @property
    def method(self) -> str:
        return self.lead.method

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]


def group_runs(runs: Sequence[RunRecord], *, by_seed: bool = True) -> list[RunGroup]:
    """Runs that differ only in their seed become one group (in first-seen order, members by
    seed); labels name the setting, with `[n seeds]` when a group has several."""
    groups: dict[str, RunGroup] = {}
    for run in runs:
        key = run.settings_key() if by_seed else str(run.path.resolve())
        groups.setdefault(key, RunGroup([])).runs.append(run)
    out = list(groups.values())
    for g in out:
        seeds = [_freeze(s) for s in g.seeds]
        if len(set(seeds)) != len(seeds):  # same setting and seed twice: keep them apart
            out = [RunGroup([r]) for grp in out for r in grp.runs]
            by_seed = False
            break
        g.runs.sort(key=_seed_order)
    leads = [
        type(g.lead)(g.lead.path, g.lead.config, g.lead.metrics) for g in out
    ]  # copies: labelling the leads must not rename the runs
    assign_labels(leads, exclude=("seed",) if by_seed else ())
    for g, lead in zip(out, leads, strict=True):
        g.label = lead.label + (f" [{len(g.runs)} seeds]" if len(g.runs) > 1 else "")
    return out
