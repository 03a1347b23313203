"""Partial fine-tuning of the top blocks on cached maps: the blocks below stay frozen, so their
output is read from a feature bank's kept map (:mod:`train.feature_bank`, ``keep_map``) and a
448- or 640-px recipe costs a few CPU minutes an epoch, not an hour.

The trained part is EfficientNet's last stage (``block6``), its 1×1 head and the linear
fracture head; the frozen taps (e.g. ``block4``'s global average, stride 16) come from the
bank as they are. BatchNorm keeps its ImageNet statistics (eval mode): with a frozen trunk the
statistics of FracAtlas would be the one thing fitted to one hospital. The head starts from the
LP probe (LP-FT). Augmentation acts on the cached map: a left-right mirror and a shift of up to
one cell (the map of a mirrored film is close to, not equal to, the mirrored map).

Each epoch is scored on FracAtlas validation and, when a site is given, on the site; the
weights of every epoch are kept, so the epoch can be chosen on the site (choosing, not
fitting). :func:`full_model` puts the chosen top back on the offline backbone: an ordinary
:class:`train.models.FractureNet` with ``feature_taps``, whose logit equals this module's on
the same film up to the float16 of the cached map.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_app._optional import require
from train.losses import distillation_loss
from train.metrics import auroc

torch = require("torch", "fine-tune the top blocks")
nn = torch.nn
F = torch.nn.functional
logger = logging.getLogger(__name__)


@dataclass
class TopConfig:
    epochs: int = 8
    lr: float = 3e-5  # the top blocks: a tenth of last round's top-block rate
    head_lr: float = 3e-4
    weight_decay: float = 0.05
    batch_size: int = 64
    seed: int = 0
    alpha: float = 0.0  # weight of the teacher's soft target (0: no distillation)
    temperature: float = 2.0
    shift: int = 1
    threads: int | None = None
    start_block: int = 6  # 6: train block6 + the 1×1 head; 7: the 1×1 head only


class TopNet(nn.Module):
    """``block6 → conv_head → bn2`` on a cached ``block5`` map, then GAP, then the linear head
    over ``[frozen pooled taps, head GAP]`` (the order of ``feature_taps``)."""

    def __init__(self, backbone, frozen_features: int, start_block: int = 6):
        super().__init__()
        self.start_block = start_block
        self.blocks = copy.deepcopy(nn.Sequential(*backbone.blocks[start_block:]))
        self.conv_head = copy.deepcopy(backbone.conv_head)
        self.bn2 = copy.deepcopy(backbone.bn2)
        self.frozen_features = frozen_features
        self.head = nn.Linear(frozen_features + backbone.conv_head.out_channels, 1)

    def forward(self, maps, frozen_pooled):
        top = self.bn2(self.conv_head(self.blocks(maps))).mean((2, 3))
        return self.head(torch.cat([frozen_pooled, top], 1)).squeeze(1)


@dataclass
class TopData:
    maps: np.ndarray  # (n, C, h, w) float16
    frozen: np.ndarray  # (n, k) float32, the frozen taps' pooled features
    labels: np.ndarray
    teacher: np.ndarray | None = None
    groups: list[str] = field(default_factory=list)


def _augment(maps, generator, shift: int):
    flip = torch.rand(maps.shape[0], generator=generator) < 0.5
    maps = torch.where(flip[:, None, None, None], maps.flip(3), maps)
    if shift:
        dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
        maps = torch.roll(maps, (dy, dx), (2, 3))
    return maps


@torch.inference_mode()
def logits_of(model: TopNet, data: TopData, batch: int = 128) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(data.labels), batch):
        maps = torch.from_numpy(data.maps[start : start + batch].astype(np.float32))
        frozen = torch.from_numpy(data.frozen[start : start + batch])
        out.append(model(maps, frozen).numpy())
    return np.concatenate(out).astype(np.float64)


def fine_tune(
    backbone,
    head_weight: np.ndarray,
    head_bias: float,
    train: TopData,
    val: TopData,
    config: TopConfig,
    site: TopData | None = None,
    test: TopData | None = None,
) -> dict[str, Any]:
    """Train; return every epoch's scores and weights (epoch 0 = the LP start). ``test`` is
    scored every epoch too: only for the held-out-acquisition proxy, never the regular test."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = TopNet(backbone, train.frozen.shape[1], config.start_block)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(head_weight).float().view(1, -1))
        model.head.bias.fill_(head_bias)
    top = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    optimiser = torch.optim.AdamW(
        [
            {"params": top, "lr": config.lr},
            {"params": model.head.parameters(), "lr": config.head_lr},
        ],
        weight_decay=config.weight_decay,
    )
    steps = max(1, len(train.labels) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=[config.lr, config.head_lr],
        total_steps=steps * max(config.epochs, 1),
        pct_start=0.1,
    )
    positives = float(train.labels.sum())
    pos_weight = torch.tensor((len(train.labels) - positives) / positives)
    labels = torch.from_numpy(train.labels.astype(np.float32))
    teacher = None if train.teacher is None else torch.from_numpy(train.teacher.astype(np.float32))
    history = [_score(model, 0, val, site, 0.0, test)]
    states = [copy.deepcopy(model.state_dict())]
    for epoch in range(1, config.epochs + 1):
        model.train()
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        started, total = time.perf_counter(), 0.0
        order = torch.randperm(len(train.labels), generator=generator)
        for step in range(steps):
            index = np.sort(
                order[step * config.batch_size : (step + 1) * config.batch_size].numpy()
            )
            maps = _augment(
                torch.from_numpy(train.maps[index].astype(np.float32)), generator, config.shift
            )
            logits = model(maps, torch.from_numpy(train.frozen[index]))
            hard = F.binary_cross_entropy_with_logits(logits, labels[index], pos_weight=pos_weight)
            loss = hard
            if config.alpha > 0 and teacher is not None:
                loss = distillation_loss(
                    logits, teacher[index], hard, config.temperature, config.alpha
                )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item()
        history.append(_score(model, epoch, val, site, time.perf_counter() - started, test))
        history[-1]["loss"] = round(total / steps, 4)
        states.append(copy.deepcopy(model.state_dict()))
        logger.info("top fine-tune epoch %d: %s", epoch, history[-1])
    return {"history": history, "states": states}


def _score(model, epoch, val, site, seconds: float, test=None) -> dict[str, Any]:
    row = {"epoch": epoch, "val_auroc": round(auroc(val.labels, logits_of(model, val)), 4)}
    if site is not None:
        row["site_auroc"] = round(auroc(site.labels, logits_of(model, site)), 4)
    if test is not None:
        row["test_auroc"] = round(auroc(test.labels, logits_of(model, test)), 4)
    row["seconds"] = round(seconds, 1)
    return row


def full_model(backbone_name: str, taps, state: dict, start_block: int = 6):
    """``start_block``: the first stage the fine-tune trained (``TopConfig.start_block``)."""
    from train.models import create_model

    model = create_model(backbone_name, pretrained="offline", feature_taps=taps)
    backbone = model.backbone
    top = {k[len("blocks.") :]: v for k, v in state.items() if k.startswith("blocks.")}
    for offset, stage in enumerate(backbone.blocks[start_block:]):
        prefix = f"{offset}."
        stage.load_state_dict({k[len(prefix) :]: v for k, v in top.items() if k.startswith(prefix)})
    backbone.conv_head.load_state_dict(
        {k[len("conv_head.") :]: v for k, v in state.items() if k.startswith("conv_head.")}
    )
    backbone.bn2.load_state_dict(
        {k[len("bn2.") :]: v for k, v in state.items() if k.startswith("bn2.")}
    )
    with torch.no_grad():
        model.fracture_head.weight.copy_(state["head.weight"])
        model.fracture_head.bias.copy_(state["head.bias"])
    return model.eval()


# --------------------------------------------------------------------------- a whole run


def _split_data(bank_path, rows, taps, teacher: dict[str, float] | None = None) -> TopData:
    from train.feature_bank import read_bank, read_maps

    bank = read_bank(bank_path)
    files = [r["file"] for r in rows]
    frozen_taps = [f"{t}:avg" for t in taps if t != "head"]
    frozen = (
        bank.select(frozen_taps, files).astype(np.float32)
        if frozen_taps
        else np.zeros((len(files), 0), np.float32)
    )
    labels = np.array([int(r.get("label", r.get("fracture")) == "1") for r in rows])
    return TopData(
        read_maps(bank_path, files),
        frozen,
        labels,
        None if teacher is None else np.array([teacher[f] for f in files]),
        [r.get("source") or r["file"] for r in rows],
    )


def lp_start(bank_path, rows, taps) -> tuple[np.ndarray, float, dict[str, Any]]:
    """The LP step on the bank's pooled taps: the head every fine-tune starts from."""
    from train.feature_bank import read_bank
    from train.probe import calibrated, choose_probe

    bank = read_bank(bank_path)
    columns = [f"{t}:avg" for t in taps]

    def part(split):
        chosen = [r for r in rows if r["split"] == split]
        return (
            bank.select(columns, [r["file"] for r in chosen]).astype(np.float64),
            np.array([int(r["label"]) for r in chosen]),
        )

    probe, scores = choose_probe(*part("train"), *part("val"))
    probe = calibrated(probe, *part("val"))
    weight, bias = probe.as_linear()
    return weight, bias, {"l2": probe.l2, "val_auroc": round(scores[probe.l2], 4)}


def run_top_finetune(
    bank: str,
    split_csv: str,
    taps: tuple[str, ...],
    config: TopConfig,
    site_bank: str | None = None,
    site_labels: str | None = None,
    teacher_logits: str | None = None,
    score_test: bool = False,
) -> dict[str, Any]:
    """LP start, then ``config.epochs`` of the top blocks; the history and every epoch's state.
    ``score_test``: also score the split's test films every epoch (the held-out proxy)."""
    import csv

    from train.batches import teacher_logit_column
    from train.models import create_model
    from train.probe_teacher import split_rows

    rows = split_rows(split_csv)
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    teacher = None
    if teacher_logits:
        values = teacher_logit_column(teacher_logits, train_rows)
        teacher = {r["file"]: float(v) for r, v in zip(train_rows, values, strict=True)}
    weight, bias, lp = lp_start(bank, rows, taps)
    site = None
    if site_bank:
        with open(site_labels, newline="") as handle:
            site_rows = [dict(r, label=r["fracture"]) for r in csv.DictReader(handle)]
        site = _split_data(site_bank, site_rows, taps)
    backbone = create_model("tf_efficientnet_lite0", pretrained="offline").backbone.eval()
    parts = [_split_data(bank, train_rows, taps, teacher), _split_data(bank, val_rows, taps)]
    test = None
    if score_test:
        test = _split_data(bank, [r for r in rows if r["split"] == "test"], taps)
    for data in [*parts, site, test]:
        if data is not None:
            data.maps = _through_frozen(backbone, data.maps, 6, config.start_block)
    result = fine_tune(backbone, weight, bias, *parts, config, site, test)
    result["linear_probe"] = lp
    result["frozen_features"] = parts[0].frozen.shape[1]
    return result


@torch.inference_mode()
def _through_frozen(backbone, maps: np.ndarray, first: int, start: int, batch: int = 128):
    """Cached ``block{first-1}`` maps carried through the frozen stages ``first..start-1``."""
    if start == first:
        return maps
    stages = backbone.blocks[first:start].eval()
    out = []
    for begin in range(0, len(maps), batch):
        chunk = torch.from_numpy(maps[begin : begin + batch].astype(np.float32))
        out.append(stages(chunk).half().numpy())
    return np.concatenate(out)


def write_checkpoint(state, taps, config: TopConfig, cache: str, out, summary) -> dict[str, Any]:
    """The chosen epoch as an ordinary checkpoint (card, operating points on validation)."""
    from train.config import TrainConfig
    from train.trainer import Trainer

    meta = json.loads((Path(cache) / "meta.json").read_text())
    model = full_model("tf_efficientnet_lite0", taps, state, config.start_block)
    train_config = TrainConfig(
        cache=str(cache),
        out=str(out),
        backbone="tf_efficientnet_lite0",
        pretrained="offline",
        input_size=int(meta["size"]),
        epochs=0,
        feature_taps=list(taps),
        seed=config.seed,
        progress=False,
        tensorboard=False,
        overwrite=True,
        threads=config.threads,
    )
    trainer = Trainer(train_config, model=model, command=summary["command"])
    trainer.linear_probe = summary["linear_probe"]
    # every film's logit from its cached block5 map through the fine-tuned top (float16 maps:
    # within 2e-3 of the full model's logit, tests/train/test_feature_bank.py); the bundle's
    # own metrics are measured again by export, on the exported file and the original films
    top = TopNet(model.backbone, summary["frozen_features"], config.start_block)
    top.load_state_dict(state)
    data = _split_data(summary["bank"], trainer.data.rows, taps)
    data.maps = _through_frozen(model.backbone, data.maps, 6, config.start_block)
    trainer.precomputed_logits = logits_of(top, data)
    return trainer.write_without_training(
        f"top fine-tune: epoch {summary['chosen_epoch']} chosen on {summary['chosen_on']}"
    )
