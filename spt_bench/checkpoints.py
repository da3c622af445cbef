"""Checkpoints in ``<run>/checkpoint/``: one folder per saved step (``step-000012/`` holding
``trained.safetensors`` = method.trained_state(), for PEFT methods ``adapter/`` = PEFT's own
``save_pretrained`` format, and ``trainer_state.pt`` = optimiser, scheduler and RNG state,
loaded with ``weights_only=True``) and ``state.json`` naming the ``last`` and ``best`` folders.
state.json is replaced atomically after a folder is complete, so a kill at any moment leaves a
loadable checkpoint; folders no longer named are deleted."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spt_bench.io import atomic_write_json, make_dirs
from spt_bench.run_folder import RunFolder

if TYPE_CHECKING:  # pragma: no cover
    from spt_bench.methods import Method
    from spt_bench.train import TrainResult

STATE_FILE = "state.json"
WEIGHTS_FILE = "trained.safetensors"
ADAPTER_DIR = "adapter"  # PEFT methods: save_pretrained's folder, next to WEIGHTS_FILE
TRAINER_FILE = "trainer_state.pt"


def _rng_state() -> dict[str, Any]:

    import numpy as np
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["python"] = json.dumps(random.getstate())
    np_state = np.random.get_state()
    state["numpy"] = (torch.from_numpy(np_state[1].astype("int64")), int(np_state[2]))
    return state


def _set_rng_state(state: dict[str, Any]) -> None:

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    keys, pos = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype("uint32"), pos))


def read_checkpoint_state(run_dir: str | Path | RunFolder) -> dict | None:
    path = RunFolder.of(run_dir).checkpoint_dir / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def save_trained_state(method: Method, folder: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in method.trained_state().items()}
    make_dirs(folder)
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"method": method.name})
    method.save_adapter(folder / ADAPTER_DIR)  # PEFT methods: a folder plain PEFT loads


def load_trained_weights(
    method: Method, run_dir: str | Path | RunFolder, which: str = "final"
) -> str | None:
    """Load the run's checkpoint into `method` ('final' = best if any, else last).
    Returns the folder name loaded, or None when the run has no checkpoint."""
    from safetensors.torch import load_file

    state = read_checkpoint_state(run_dir)
    if state is None:
        return None
    key = which
    if which == "final":
        key = "best" if state.get("best") else "last"
    name = state.get(key)
    if not name:
        return None
    path = RunFolder.of(run_dir).checkpoint_dir / name / WEIGHTS_FILE
    tensors = load_file(str(path), device=str(method.backbone.device))
    method.load_trained_state(tensors)
    return name


class _Checkpointer:
    def __init__(self, run_dir: RunFolder) -> None:
        self.root = run_dir.checkpoint_dir
        make_dirs(self.root)
        self.state: dict[str, Any] = read_checkpoint_state(run_dir) or {}

    def staging(self, step: int, *, clear: bool = True) -> Path:
        """The hidden folder a checkpoint of `step` is written into before `publish`."""
        tmp = self.root / f".step-{step:06d}.tmp"
        if clear:
            shutil.rmtree(tmp, ignore_errors=True)
            make_dirs(tmp)
        return tmp

    def save(self, method: Method, trainer: dict[str, Any], step: int, *, best: bool) -> None:
        import torch

        tmp = self.staging(step)
        save_trained_state(method, tmp)
        torch.save(trainer, tmp / TRAINER_FILE)
        self.publish(tmp, method, step, best=best, train_seconds=trainer.get("train_seconds"))

    def publish(
        self, tmp: Path, method: Method, step: int, *, best: bool, train_seconds: Any
    ) -> None:
        """Rename a complete staging folder to step-N and name it in state.json (atomic)."""
        name = f"step-{step:06d}"
        folder = self.root / name
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        self.state["last"] = name
        self.state["last_step"] = step
        if best:
            self.state["best"] = name
            self.state["best_step"] = step
        self.state["method"] = method.name
        self.state["train_seconds"] = train_seconds
        atomic_write_json(self.root / STATE_FILE, self.state)
        keep = {self.state.get("last"), self.state.get("best")}
        for d in self.root.glob("step-*"):
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)

    def mark_best(self, dev_loss: float, step: int) -> None:
        self.state["best_dev_loss"] = dev_loss
        self.state["best_step"] = step

    def finish(self, result: TrainResult) -> None:
        self.state["finished"] = True
        self.state["steps"] = result.steps
        self.state["stopped_early"] = result.stopped_early
        self.state["train_seconds"] = round(result.total_seconds, 3)
        atomic_write_json(self.root / STATE_FILE, self.state)
