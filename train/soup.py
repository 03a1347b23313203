"""A uniform soup: the element-wise mean of several checkpoints' weights (Wortsman et al., 2022).

Students fine-tuned from the same initialisation (here: the same linear-probed ImageNet
backbone) with different seeds sit in one basin, and their mean often generalises better than
any one of them, at the cost of one model. The soup is evaluated on the cache like any trained
model, so its card's operating points and metrics belong to the averaged weights.

    fracture-edge soup runs/plan/seed0 runs/plan/seed1 runs/plan/seed2 --out runs/plan/soup
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_app._optional import require
from edge_app.errors import UsageError
from train.checkpoints import load_checkpoint
from train.config import load_config

torch = require("torch", "average checkpoints")


def average_states(states: Sequence[dict]) -> dict:
    """Element-wise mean of floating tensors; integer buffers (BN's batch counters) from the
    first state. Every state must have the same keys and shapes."""
    first = states[0]
    for other in states[1:]:
        if other.keys() != first.keys():
            raise UsageError("checkpoints with different parameters cannot be averaged")
        for key, value in first.items():
            if other[key].shape != value.shape:
                raise UsageError(
                    f"{key}: shapes {tuple(value.shape)} and {tuple(other[key].shape)}"
                )
    return {
        key: torch.stack([s[key].float() for s in states]).mean(0)
        if value.is_floating_point()
        else value.clone()
        for key, value in first.items()
    }


def uniform_soup(folders: Sequence[str | Path], out: str | Path, command: str) -> dict[str, Any]:
    from train.trainer import Trainer

    if len(folders) < 2:
        raise UsageError("a soup needs at least two checkpoints")
    loaded = [load_checkpoint(folder) for folder in folders]
    architectures = {card["architecture"] for _, card, _ in loaded}
    preprocessings = {preprocessing for _, _, preprocessing in loaded}
    if len(architectures) > 1 or len(preprocessings) > 1:
        raise UsageError(
            f"soup ingredients must share architecture and preprocessing; got {architectures}"
        )
    model = loaded[0][0]
    model.load_state_dict(average_states([m.state_dict() for m, _, _ in loaded]))
    base = {k: v for k, v in loaded[0][1]["config"].items() if k not in ("out", "name", "resume")}
    config = replace(load_config(None, base), out=str(out), name=Path(out).name, epochs=0)
    trainer = Trainer(config, model=model, preprocessing=loaded[0][2], command=command)
    trainer.soup_of = [str(folder) for folder in folders]
    return trainer.write_without_training(f"uniform soup of {len(folders)} checkpoints")
