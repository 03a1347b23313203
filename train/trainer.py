"""``fracture-edge train`` / ``distill``: the one training loop, for CPU and GPU alike.

A :class:`Trainer` fits one model on the image cache, keeps the weights of the epoch with the
best validation AUROC, and writes a checkpoint folder: ``model.safetensors`` (float32 or float16),
``model_card.json``, ``config.yaml`` (the resolved config), ``logits.csv`` (every cached image),
``log.csv``, ``tensorboard/`` and ``last_state.pt`` (for ``--resume``). A plan of several runs
(teachers, then the students they teach) is :mod:`train.plan`.

Every model input is made by the torch twin of the app's preprocessing
(:mod:`train.tensor_preprocess`) with the :class:`~edge_app.preprocess.PreprocessConfig` built
once here, from the backbone, the initialisation, the input size and the cache's fill; that same
object is the card's ``preprocessing``. Augmentation (the policy in :mod:`train.augment`) runs
either per image through albumentations or batched on tensors on the training device
(:mod:`train.device_augment`). On CUDA: bf16 autocast and channels_last by default. Under
``torchrun`` the same entry point trains with DDP (NCCL on GPUs, gloo on CPU).
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edge_app._optional import require
from edge_app.card import write_card
from edge_app.errors import UsageError
from edge_app.preprocess import PreprocessConfig
from train.augment import build_augmentation, policy
from train.batches import REGIONS, Batches, CacheData, teacher_logit_column
from train.checkpoints import load_checkpoint, write_logits_csv
from train.config import TrainConfig, save_config
from train.evaluate import evaluate_scores
from train.losses import (
    attention_transfer_loss,
    distillation_loss,
    outline_cam_loss,
    supervised_loss,
)
from train.metrics import auroc
from train.models import create_model, file_sha256, load_state_file
from train.optim import frozen_modules, parameter_groups
from train.provenance import git_commit, project_version
from train.registry import preprocessing_for
from train.run_log import RunLog
from train.tensor_preprocess import normalize, resize_batch

torch = require("torch", "train models")
F = torch.nn.functional
logger = logging.getLogger(__name__)

LABELS = ("no_fracture", "fracture")


# --------------------------------------------------------------------------- distributed


def distributed_context() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def resolve_device(config: TrainConfig, rank: int):
    if config.device != "auto":
        return torch.device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


# --------------------------------------------------------------------------- data


# --------------------------------------------------------------------------- trainer


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        model=None,
        preprocessing: PreprocessConfig | None = None,
        command: str | None = None,
        plan: dict[str, Any] | None = None,
    ):
        """``model``: train this FractureNet (e.g. a pruned one) instead of building a new one;
        ``preprocessing``: the one it was trained with (default: built from the config).
        ``command``/``plan``: what the card names as the way to reproduce this run."""
        self.config = config
        self.started = time.perf_counter()
        if config.threads:
            torch.set_num_threads(config.threads)
        self.rank, self.world = distributed_context()
        self.device = resolve_device(config, self.rank)
        self.out = Path(config.out)
        self.data = CacheData(config, self.device)
        self.preprocessing = preprocessing or preprocessing_for(
            config.backbone, config.pretrained, config.input_size, self.data.fill
        )
        self._check_preprocessing()
        self.command = command or shlex.join(["fracture-edge", *sys.argv[1:]])
        self.plan = plan
        self.augment_on_device = config.augment == "device" or (
            config.augment == "auto" and self.device.type == "cuda"
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed)
        self.policy = policy(config.augment_policy, fill=self.data.fill)
        self.albumentations = (
            None
            if self.augment_on_device
            else build_augmentation(self.policy, seed=config.seed + self.rank)
        )
        self.pos_weight = torch.tensor(self.data.positive_weight(), device=self.device)
        use_bf16 = config.precision == "bf16" or (
            config.precision == "auto" and self.device.type == "cuda"
        )
        self.autocast = {
            "device_type": self.device.type,
            "dtype": torch.bfloat16,
            "enabled": use_bf16,
        }
        self.channels_last = (
            config.channels_last if config.channels_last is not None else self.device.type == "cuda"
        )
        self.teachers = [self._load_teacher(path) for path in config.teachers]
        self.fixed_teacher_logits = None
        if config.teacher_logits:
            self.fixed_teacher_logits = torch.from_numpy(
                teacher_logit_column(config.teacher_logits, self.data.rows)
            ).to(self.device)
        self.model_given = model is not None
        self.model = self._build_model() if model is None else self._place(model)
        self.frozen = frozen_modules(self.model, config.freeze_stages)
        self.batches_of = Batches(
            self.data,
            self.preprocessing,
            self.policy,
            self.generator,
            self.augment_on_device,
            self.albumentations,
            config.cam_supervision,
        )
        self.linear_probe: dict[str, Any] | None = None
        self.precomputed_logits: np.ndarray | None = None  # every cached film's, in row order
        self.soup_of: list[str] | None = None

    # ----------------------------------------------------------------- setup

    def _check_preprocessing(self) -> None:
        if self.preprocessing.input_size != self.config.input_size:
            raise UsageError(
                f"the model's preprocessing is {self.preprocessing.input_size} px but the config "
                f"asks for {self.config.input_size}; pass --input-size "
                f"{self.preprocessing.input_size}"
            )
        if abs(self.preprocessing.fill - self.data.fill) > 1e-9:
            raise UsageError(
                f"{self.config.cache} is letterboxed with fill {self.data.fill}, the model with "
                f"{self.preprocessing.fill}; rebuild the cache with the model's fill"
            )

    def _build_model(self):
        torch.manual_seed(self.config.seed)
        aux = {}
        if self.config.region_head:
            aux["region"] = len(REGIONS)
        if self.config.type_head:
            if not self.data.fracture_types:
                raise UsageError(
                    f"--type-head needs fracture types; {self.config.cache} has none "
                    "(build the cache from a folder-per-class fracture-type tree)"
                )
            aux["fracture_type"] = len(self.data.fracture_types)
        model = create_model(
            self.config.backbone,
            pretrained=self.config.pretrained,
            aux_heads=aux or None,
            drop_rate=self.config.drop_rate,
            feature_taps=self.config.feature_taps,
        )
        if self.config.init_weights:
            state = load_state_file(self.config.init_weights, self.config.init_sha256)
            state = {k: v.float() for k, v in state.items()}
            target = model if any(k.startswith("backbone.") for k in state) else model.backbone
            missing, unexpected = target.load_state_dict(state, strict=False)
            if unexpected:
                raise UsageError(
                    f"{self.config.init_weights} holds unexpected keys {unexpected[:5]}"
                )
            logger.info(
                "initialised from %s (%d keys left at init)", self.config.init_weights, len(missing)
            )
        return self._place(model)

    def _place(self, model):
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _load_teacher(self, folder: str):
        # load_checkpoint, so that a pruned checkpoint can teach too
        teacher, _, preprocessing = load_checkpoint(folder, self.device)
        teacher.requires_grad_(False)
        return teacher, preprocessing

    # ----------------------------------------------------------------- batches

    def batches(self):
        train = self.data.index["train"]
        if self.config.imbalance == "balanced_sampler":
            weights = torch.where(self.data.labels[train] > 0, self.pos_weight, 1.0)
            order = train[torch.multinomial(weights, len(train), True, generator=self.generator)]
        else:
            order = train[torch.randperm(len(train), device=self.device, generator=self.generator)]
        order = order[self.rank :: self.world]
        size = self.config.batch_size
        for start in range(0, max(1, len(order) - size + 1), size):
            yield order[start : start + size]

    def model_inputs(self, images, preprocessing: PreprocessConfig | None = None):
        """Canvases in [0, 1] → normalised model inputs (resized to a teacher's size if needed)."""
        preprocessing = preprocessing or self.preprocessing
        if images.shape[-1] != preprocessing.input_size:
            size = preprocessing.input_size
            images = resize_batch(images, size, size)
        inputs = normalize(images, preprocessing)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def eval_inputs(self, indices):
        """Normalised, un-augmented model inputs of cached films."""
        return self.model_inputs(self.batches_of.images(indices, False))

    # ----------------------------------------------------------------- loss and steps

    def loss(self, model, indices):
        images, masks = self.batches_of.batch(indices, training=True)
        targets = self.data.labels[indices]
        with torch.autocast(**self.autocast):
            module = model.module if hasattr(model, "module") else model
            features = module.features(self.model_inputs(images))
            pooled = features.mean((2, 3))
            logits = module.fracture_head(pooled).squeeze(1).float()
            loss = supervised_loss(self.config.imbalance, logits, targets, self.pos_weight)
            loss = loss + self._auxiliary_loss(module, pooled, indices)
            if self.config.cam_supervision:
                loss = loss + self._cam_loss(module, features, masks, targets)
            if self.config.distill:
                loss = self._distill(module, features, logits, loss, images, indices)
        return loss

    def _cam_loss(self, module, features, masks, targets):
        cam = module.cam_from_features(features.float())
        shares = F.adaptive_avg_pool2d(masks, cam.shape[-2:]).squeeze(1)
        positive, negative = outline_cam_loss(
            cam, shares, targets, module.fracture_head.bias[0], self.config.cam_temperature
        )
        return self.config.cam_weight * positive + self.config.cam_negative_weight * negative

    def _auxiliary_loss(self, module, pooled, indices):
        """Cross-entropy of each auxiliary head on the images whose class is known (≥ 0)."""
        total = torch.zeros((), device=self.device)
        for name, targets, weight in (
            ("region", self.data.regions, self.config.region_weight),
            ("fracture_type", self.data.types, self.config.type_weight),
        ):
            if name not in module.aux_heads:
                continue
            wanted = targets[indices]
            known = wanted >= 0
            if known.any():
                logits = module.aux_heads[name](pooled).float()
                total = total + weight * F.cross_entropy(logits[known], wanted[known])
        return total

    def _distill(self, module, features, logits, hard_loss, images, indices):
        teacher_logits, teacher_cams = [], []
        if self.fixed_teacher_logits is not None:
            teacher_logits.append(self.fixed_teacher_logits[indices])
        with torch.no_grad():
            for teacher, preprocessing in self.teachers:
                teacher_features = teacher.features(self.model_inputs(images, preprocessing))
                teacher_logits.append(
                    teacher.fracture_head(teacher_features.mean((2, 3))).squeeze(1).float()
                )
                teacher_cams.append(teacher.cam_from_features(teacher_features.float()))
        target = torch.stack(teacher_logits).mean(0)
        loss = distillation_loss(
            logits, target, hard_loss, self.config.temperature, self.config.alpha
        )
        if self.config.attention_weight > 0 and teacher_cams:
            student_cam = module.cam_from_features(features.float())
            teacher_cam = torch.stack(
                [c / (c.abs().amax((1, 2), keepdim=True) + 1e-6) for c in teacher_cams]
            ).mean(0)
            loss = loss + self.config.attention_weight * attention_transfer_loss(
                student_cam, teacher_cam
            )
        return loss

    @torch.no_grad()
    def logits(self, model, indices) -> np.ndarray:
        module = model.module if hasattr(model, "module") else model
        was_training = module.training
        module.eval()
        outputs = []
        for start in range(0, len(indices), 128):
            chunk = indices[start : start + 128]
            with torch.autocast(**self.autocast):
                outputs.append(module(self.eval_inputs(chunk)).float())
        module.train(was_training)
        return torch.cat(outputs).cpu().numpy() if outputs else np.zeros(0, np.float32)

    def validation_auroc(self, model) -> float:
        val = self.data.index["val"]
        return auroc(self.data.labels[val].cpu().numpy(), self.logits(model, val))

    # ----------------------------------------------------------------- fit

    def past_deadline(self) -> bool:
        limit = self.config.deadline_minutes
        return limit is not None and time.perf_counter() - self.started > limit * 60

    def claim_output(self) -> None:
        """Refuse to train over a finished checkpoint unless resuming or told to overwrite."""
        config = self.config
        if (self.out / "model_card.json").is_file() and not (config.resume or config.overwrite):
            raise UsageError(
                f"{self.out} already holds a trained checkpoint; refusing to replace it. Pass "
                "--resume to continue it, --overwrite to replace it, or another --out"
            )

    def fit(self) -> dict[str, Any]:
        config = self.config
        self.claim_output()
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(config, self.out / "config.yaml")
        resuming = config.resume and (self.out / "last_state.pt").is_file()
        if config.linear_probe_init and not resuming:
            self.linear_probe = self.fit_linear_probe()
        if config.epochs == 0:
            if not config.linear_probe_init:
                raise UsageError("epochs: 0 trains nothing; add linear_probe_init to fit the head")
            # the frozen floor as a plan run: the offline backbone untouched, the LP head only
            self.save_weights(self.model)
            return self.finish({"best_epoch": -1, "epoch": 0, "stopped": "linear probe only"})
        model = self.model
        if self.world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        groups = parameter_groups(self.model, config.lr, config.layer_decay)
        optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = max(1, len(self.data.index["train"]) // self.world // config.batch_size)
        schedule = self._schedule(optimizer, steps_per_epoch * config.epochs)
        ema = self._ema()
        state = {"epoch": 0, "best_auroc": -1.0, "best_epoch": -1, "stale": 0, "steps": 0}
        if resuming:
            state = self._resume(optimizer, schedule, ema)
        state["stopped"] = "completed"
        log = RunLog(self.out, config.tensorboard) if self.rank == 0 else None
        for epoch in range(state["epoch"], config.epochs):
            loss, rate = self.train_one_epoch(model, optimizer, schedule, ema, steps_per_epoch)
            evaluated = ema.module if ema is not None else self.model
            val_auroc = self.validation_auroc(evaluated)
            # NaN (one class in a tiny val split) never improves, but the first epoch is kept.
            improved = state["best_epoch"] < 0 or val_auroc > state["best_auroc"]
            state.update(
                epoch=epoch + 1,
                stale=0 if improved else state["stale"] + 1,
                steps=state.get("steps", 0) + steps_per_epoch,
            )
            state.setdefault("images_per_second", []).append(round(rate, 2))
            if improved:
                state.update(best_auroc=val_auroc, best_epoch=epoch)
            if self.rank == 0:
                log.write(epoch, loss, val_auroc, rate, optimizer.param_groups[0]["lr"])
                if improved:
                    self.save_weights(evaluated)
                self._save_state(optimizer, schedule, ema, state)
            logger.info(
                "%s epoch %d loss %.4f val AUROC %.4f (%.1f img/s)",
                config.run_name,
                epoch,
                loss,
                val_auroc,
                rate,
            )
            if state["stale"] >= config.patience:
                logger.info("early stop: no val AUROC gain for %d epochs", config.patience)
                state["stopped"] = "early_stop"
                break
            if self.past_deadline():
                logger.info(
                    "deadline of %s min reached after epoch %d", config.deadline_minutes, epoch
                )
                state["stopped"] = "deadline"
                break
        if log:
            log.close()
        if self.world > 1:
            torch.distributed.barrier()
        summary = self.finish(state) if self.rank == 0 else {}
        if self.world > 1:
            torch.distributed.destroy_process_group()
        return summary

    @torch.no_grad()
    def pooled_features(self, indices) -> np.ndarray:
        """Frozen global-average-pooled features (eval mode, no augmentation)."""
        self.model.eval()
        chunks = []
        for start in range(0, len(indices), 64):
            chunk = indices[start : start + 64]
            with torch.autocast(**self.autocast):
                features = self.model.features(
                    self.model_inputs(self.batches_of.images(chunk, False))
                )
            chunks.append(features.float().mean((2, 3)).cpu().numpy())
        return np.concatenate(chunks)

    def bank_features(self, indices) -> np.ndarray:
        """The pooled taps from the run's feature bank (:func:`train.feature_bank.bank_taps`)."""
        from train.feature_bank import bank_taps

        files = [self.data.rows[i]["file"] for i in indices.cpu().numpy()]
        config = self.config
        taps = self.model.feature_taps or ("head",)
        return bank_taps(config.probe_features, config.backbone, config.input_size, taps, files)

    def fit_linear_probe(self) -> dict[str, Any]:
        """LP of LP-FT: the fracture head fitted on the initial backbone's frozen features."""
        from train.probe import fit_head

        train, val = self.data.index["train"], self.data.index["val"]
        labels = self.data.labels.cpu().numpy()
        features = self.bank_features if self.config.probe_features else self.pooled_features
        grid = (self.config.probe_l2,) if self.config.probe_l2 is not None else None
        result = fit_head(
            self.model,
            features(train),
            labels[train.cpu().numpy()],
            features(val),
            labels[val.cpu().numpy()],
            **({"grid": grid} if grid else {}),
        )
        if self.config.probe_features:
            result["features"] = self.config.probe_features
        logger.info("linear probe: l2 %s, validation AUROC %.4f", result["l2"], result["val_auroc"])
        return result

    def write_without_training(self, note: str) -> dict[str, Any]:
        """Evaluate the model as it is and write a complete checkpoint (pruned or souped
        weights: the card's operating points then belong to these weights)."""
        self.claim_output()
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.out / "config.yaml")
        self.save_weights(self.model)
        return self.finish({"best_epoch": -1, "epoch": 0, "stopped": note})

    def train_one_epoch(self, model, optimizer, schedule, ema, steps: int):
        model.train()
        for module in self.frozen:
            module.eval()
        started, seen, total, count = time.perf_counter(), 0, 0.0, 0
        tqdm = require("tqdm", "show progress bars").tqdm
        batches = list(self.batches())[:steps]
        for indices in tqdm(
            batches,
            disable=not (self.config.progress and self.rank == 0),
            leave=False,
            desc="train",
        ):
            loss = self.loss(model, indices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update(model.module if hasattr(model, "module") else model)
            seen += len(indices) * self.world
            total, count = total + loss.detach(), count + 1
            if self.past_deadline():
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        mean_loss = float(total) / max(count, 1)
        return mean_loss, seen / (time.perf_counter() - started)

    def _schedule(self, optimizer, total_steps: int):
        if self.config.schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                [group["lr"] for group in optimizer.param_groups],
                total_steps=max(total_steps, 1),
                pct_start=self.config.warmup_fraction,
            )
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(total_steps, 1))

    def _ema(self):
        if not self.config.ema:
            return None
        utils = require("timm.utils", "keep an EMA of the weights")
        return utils.ModelEmaV3(self.model, decay=self.config.ema_decay)

    # ----------------------------------------------------------------- persistence

    def save_weights(self, model) -> None:
        save_file = require("safetensors.torch", "write checkpoints").save_file
        dtype = torch.float16 if self.config.weights_dtype == "float16" else None
        save_file(
            {
                key: (value.to(dtype) if dtype is not None and value.is_floating_point() else value)
                .detach()
                .cpu()
                .contiguous()
                for key, value in model.state_dict().items()
            },
            str(self.out / "model.safetensors"),
        )

    def _save_state(self, optimizer, schedule, ema, state) -> None:
        payload = {
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "model": self.model.state_dict(),
            "state": {k: v for k, v in state.items() if k != "images_per_second"},
            "generator": self.generator.get_state(),
        }
        if ema is not None:
            payload["ema"] = ema.module.state_dict()
        torch.save(payload, self.out / "last_state.pt")

    def _resume(self, optimizer, schedule, ema) -> dict:
        payload = torch.load(
            self.out / "last_state.pt", map_location=self.device, weights_only=True
        )
        self.model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        # A fresh schedule over the (possibly longer) run, fast-forwarded to where it stopped;
        # loading the old schedule's state would keep its old length.
        schedule.last_epoch = int(payload["state"].get("steps", 0))
        self.generator.set_state(
            payload["generator"].cpu() if self.device.type == "cpu" else payload["generator"]
        )
        if ema is not None and "ema" in payload:
            ema.module.load_state_dict(payload["ema"])
        logger.info("resumed at epoch %d", payload["state"]["epoch"])
        return payload["state"]

    def finish(self, state: dict) -> dict[str, Any]:
        """Reload the best weights, evaluate on val and test, write the model card."""
        best = load_state_file(self.out / "model.safetensors")
        self.model.load_state_dict({k: v.float() for k, v in best.items()})
        report = self.evaluate()
        return write_card(self.out, self.model_card(state, report), "checkpoint")

    def evaluate(self) -> dict[str, Any]:
        """Every cached image's logit (``logits.csv``), then val/test metrics whose operating
        points and temperature are chosen on validation (:func:`train.evaluate.evaluate_scores`).
        """
        labels = self.data.labels.cpu().numpy()
        val, test = (self.data.index[s].cpu().numpy() for s in ("val", "test"))
        everything = torch.arange(len(labels), device=self.device)
        if self.precomputed_logits is not None:  # e.g. the top fine-tune's, from cached maps
            logits = self.precomputed_logits
        elif self.config.epochs == 0 and self.config.probe_features and not self.model_given:
            head = self.model.fracture_head  # LP-only: the head on the bank, no pass per film
            weight = head.weight.detach().cpu().double().numpy()[0]
            logits = self.bank_features(everything) @ weight + float(head.bias.detach())
        else:
            logits = self.logits(self.model, everything)
        write_logits_csv(self.out / "logits.csv", self.data.rows, {self.config.run_name: logits})
        if len(test) == 0:  # a split without test rows: measure validation twice
            test = val
        report = evaluate_scores(labels[val], logits[val], labels[test], logits[test])
        report["localisation"] = {
            name: self.localisation(self.data.index[name]) for name in ("val", "test")
        }
        return report

    @torch.no_grad()
    def localisation(self, indices) -> dict[str, Any] | None:
        """Pointing game and top-region IoU of the in-graph CAM against the fracture outlines,
        on the fractured films that have one (canvas frame, CAM upsampled bilinearly)."""
        from edge_app.findings import mask_iou, peak, top_region

        if self.data.masks is None:
            return None
        outlined = self.data.masks[indices].flatten(1).amax(1) > 0
        indices = indices[outlined & (self.data.labels[indices] > 0.5)]
        if len(indices) == 0:
            return None
        self.model.eval()
        hits, overlaps = [], []
        for start in range(0, len(indices), 64):
            chunk = indices[start : start + 64]
            images, masks = self.batches_of.batch(chunk, training=False)
            cams = self.model.class_activation_map(self.model_inputs(images)).float()
            cams = F.interpolate(cams.unsqueeze(1), size=images.shape[-2:], mode="bilinear")
            for cam, mask in zip(
                cams[:, 0].cpu().numpy(), masks[:, 0].cpu().numpy() > 0.5, strict=True
            ):
                heatmap = np.maximum(cam, 0)
                point = peak(heatmap)
                hits.append(point is not None and bool(mask[point]))
                overlaps.append(mask_iou(top_region(heatmap), mask))
        return {
            "films": len(hits),
            "pointing_game": round(float(np.mean(hits)), 4),
            "top_region_iou_mean": round(float(np.nanmean(overlaps)), 4),
        }

    def model_card(self, state: dict, report: dict) -> dict[str, Any]:
        init = self.config.pretrained or ("file" if self.config.init_weights else "scratch")
        pruning = getattr(self.model, "pruning", None)
        if self.model_given:
            init = "pruned" if pruning else ("uniform soup" if self.soup_of else "given")
        points = report["operating_points"]
        rates = state.get("images_per_second") or []
        return {
            "name": self.config.run_name,
            "architecture": self.config.backbone,
            "initialisation": init,
            # load_checkpoint shrinks the base architecture to the pruned shapes
            **({"pruning": pruning} if pruning else {}),
            "labels": list(LABELS),
            "aux_heads": {name: head.out_features for name, head in self.model.aux_heads.items()},
            **({"feature_taps": list(self.model.feature_taps)} if self.model.feature_taps else {}),
            "region_labels": list(REGIONS) if self.config.region_head else [],
            "fracture_type_labels": self.data.fracture_types if self.config.type_head else [],
            "preprocessing": self.preprocessing.to_card(),
            "calibration_temperature": report["calibration"]["temperature"],
            "operating_points": {name: point["probability"] for name, point in points.items()},
            "metrics": checkpoint_metrics(report),
            "linear_probe": self.linear_probe,
            **({"soup_of": self.soup_of} if self.soup_of else {}),
            "best_epoch": state["best_epoch"],
            "epochs_run": state["epoch"],
            "stopped": state.get("stopped", "completed"),
            "training_data": {"cache": str(self.config.cache), **self.data.describe()},
            "teachers": list(self.config.teachers)
            + ([self.config.teacher_logits] if self.config.teacher_logits else []),
            "config": asdict(self.config),
            "command": self.command,
            "plan": self.plan,
            "trained_on": {
                "device": torch.cuda.get_device_name(self.device)
                if self.device.type == "cuda"
                else platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "seconds": round(time.perf_counter() - self.started, 1),
                "images_per_second_median": float(np.median(rates)) if rates else None,
            },
            "weights_dtype": self.config.weights_dtype,
            "weights_sha256": file_sha256(self.out / "model.safetensors"),
            "fracture_edge_version": project_version(),
            "commit": git_commit(),
        }


def checkpoint_metrics(report: dict) -> dict[str, Any]:
    """The card's slice of an :func:`train.evaluate.evaluate_scores` report."""
    points = report["operating_points"]
    return {
        "val_auroc": report["val"]["auroc"],
        "val_auroc_ci95": report["val"].get("auroc_ci95"),
        "test_auroc": report["test"]["auroc"],
        "test_auroc_ci95": report["test"]["auroc_ci95"],
        "test_auprc": report["test"]["auprc"],
        "counts": report["counts"],
        **{
            f"test_at_{name}": {key: point["test"][key] for key in ("sensitivity", "specificity")}
            for name, point in points.items()
        },
        "operating_point_rules": {
            name: {"rule": point["rule"], "val": point["val"]} for name, point in points.items()
        },
        "localisation": report.get("localisation"),
    }


def train(config: TrainConfig, **kwargs) -> dict[str, Any]:
    return Trainer(config, **kwargs).fit()
