"""One self-contained GPU run: teachers, students with and without distillation, evaluation.

Built for a short GPU lease: the whole cache sits in GPU memory as uint8, augmentation runs on the
GPU, and everything that must come back (metrics, every model's logits per image, the students'
weights in fp16) is written to ``--out`` as soon as each model finishes, so a run cut short still
returns what it finished. Teachers' weights stay behind (too large to bring back), which is why
distillation happens in the same run.

    python -m train.gpu_experiment --cache cache/fracatlas-256 --weights cache/weights --out OUT

On CPU, ``--limit 48 --size 64 --teacher-epochs 1 --student-epochs 1`` is the smoke test.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from train.cache import load_cached_bank
from train.device_augment import augment_batch, resize_batch
from train.losses import distillation_loss, focal_loss
from train.metrics import auroc, operating_point_report
from train.models import create_model, normalisation_for

F = torch.nn.functional

logger = logging.getLogger("gpu_experiment")


@dataclass
class RunSpec:
    name: str
    backbone: str
    pretrained: str | None  # None (scratch) or "offline" (ImageNet, from --weights)
    epochs: int
    lr: float
    role: str  # "teacher" | "student"
    distill: bool = False
    loss: str = "bce_pos_weight"  # | "focal" | "bce_balanced_sampler"


# --------------------------------------------------------------------------- data


def load_bank(cache_dir: Path, device, limit: int | None):
    """Every cached canvas as one uint8 tensor (n, 1, s, s) on ``device``, plus the index rows."""
    with open(cache_dir / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if limit:
        rng = np.random.default_rng(0)
        rows = [rows[i] for i in sorted(rng.choice(len(rows), min(limit, len(rows)), False))]
    images = load_cached_bank(cache_dir, rows)
    bank = torch.from_numpy(images).unsqueeze(1).to(device)
    labels = torch.tensor([int(r["label"]) for r in rows], dtype=torch.float32, device=device)
    return bank, labels, rows


# --------------------------------------------------------------------------- training


class Runner:
    def __init__(self, args, bank, labels, rows, device):
        self.args, self.bank, self.labels, self.rows, self.device = args, bank, labels, rows, device
        split = np.array([r["split"] for r in rows])
        self.index = {
            name: torch.tensor(np.flatnonzero(split == name), device=device)
            for name in ("train", "val", "test")
        }
        train_labels = labels[self.index["train"]]
        positives = float(train_labels.sum())
        self.pos_weight = torch.tensor(
            (len(train_labels) - positives) / max(positives, 1), device=device
        )
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(args.seed)
        self.autocast = dict(
            device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
        )

    def batches(self, spec: RunSpec):
        train = self.index["train"]
        if spec.loss == "bce_balanced_sampler":
            weights = torch.where(self.labels[train] > 0, self.pos_weight, 1.0)
            order = train[torch.multinomial(weights, len(train), True, generator=self.generator)]
        else:
            order = train[torch.randperm(len(train), device=self.device, generator=self.generator)]
        size = self.args.batch_size
        for start in range(0, len(order) - size + 1 if len(order) >= size else 1, size):
            yield order[start : start + size]

    def inputs(self, indices, mean_std, training: bool):
        batch = self.bank[indices]
        images = (
            augment_batch(batch, self.args.size, self.generator)
            if training
            else resize_batch(batch, self.args.size)
        )
        mean, std = mean_std
        return ((images - mean) / std).contiguous(memory_format=torch.channels_last)

    def loss(self, spec, model, indices, teachers):
        mean_std = normalisation_for(spec.backbone, spec.pretrained)
        images = self.inputs(indices, mean_std, training=True)
        targets = self.labels[indices]
        with torch.autocast(**self.autocast):
            logits = model(images).float()
            if spec.distill:
                with torch.no_grad():
                    teacher_logits = torch.stack(
                        [
                            teacher(self.renormalise(images, mean_std, teacher_norm)).float()
                            for teacher, teacher_norm in teachers
                        ]
                    ).mean(0)
                hard = F.binary_cross_entropy_with_logits(
                    logits, targets, pos_weight=self.pos_weight
                )
                return distillation_loss(
                    logits, teacher_logits, hard, self.args.temperature, self.args.alpha
                )
        if spec.loss == "focal":
            return focal_loss(logits, targets)
        pos_weight = None if spec.loss == "bce_balanced_sampler" else self.pos_weight
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)

    @staticmethod
    def renormalise(images, source, target):
        if source == target:
            return images
        return ((images * source[1] + source[0]) - target[0]) / target[1]

    @torch.no_grad()
    def logits(self, model, spec, indices) -> np.ndarray:
        model.eval()
        outputs = []
        mean_std = normalisation_for(spec.backbone, spec.pretrained)
        for start in range(0, len(indices), 256):
            chunk = indices[start : start + 256]
            with torch.autocast(**self.autocast):
                outputs.append(model(self.inputs(chunk, mean_std, training=False)).float())
        return torch.cat(outputs).cpu().numpy()

    def fit(self, spec: RunSpec, teachers=()):
        torch.manual_seed(self.args.seed)
        init = None
        if spec.pretrained == "offline":
            init = self.args.weights / f"{spec.backbone}.safetensors"
        model = create_model(spec.backbone, pretrained=None, drop_rate=0.2)
        if init is not None:
            from safetensors.torch import load_file

            state = {k: v.float() for k, v in load_file(str(init)).items()}
            missing, unexpected = model.backbone.load_state_dict(state, strict=False)
            assert not unexpected and all(k.startswith("classifier") for k in missing), missing
        model = model.to(self.device).to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.05)
        steps = max(1, spec.epochs * max(1, len(self.index["train"]) // self.args.batch_size))
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, spec.lr, total_steps=steps, pct_start=0.1
        )
        best = (-1.0, None, -1)
        history = []
        step = 0
        for epoch in range(spec.epochs):
            model.train()
            started = time.perf_counter()
            seen = 0
            for indices in self.batches(spec):
                if step >= steps:
                    break
                loss = self.loss(spec, model, indices, teachers)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                seen += len(indices)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
            val = auroc(
                self.labels[self.index["val"]].cpu().numpy(),
                self.logits(model, spec, self.index["val"]),
            )
            history.append(
                {
                    "epoch": epoch,
                    "loss": round(loss.item(), 4),
                    "val_auroc": round(val, 4),
                    "images_per_second": round(seen / elapsed, 1),
                }
            )
            logger.info(
                "%s epoch %d loss %.4f val AUROC %.4f (%.0f img/s)",
                spec.name,
                epoch,
                loss.item(),
                val,
                seen / elapsed,
            )
            if best[1] is None or val > best[0]:
                best = (val, {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch)
        model.load_state_dict(best[1])
        model.eval()
        return model, history, best[2]


# --------------------------------------------------------------------------- evaluation


def evaluate(labels_val, logits_val, labels_test, logits_test) -> dict:
    report = operating_point_report(
        labels_val, 1 / (1 + np.exp(-logits_val)), labels_test, 1 / (1 + np.exp(-logits_test))
    )
    report["val_auroc"] = round(report["val_auroc"], 4)
    report["test_auroc"] = round(report["test_auroc"], 4)
    report["test_auroc_ci95"] = [round(v, 4) for v in report["test_auroc_ci95"]]
    for name in ("doubt", "fracture"):
        report[f"test_at_{name}"] = {k: round(v, 4) for k, v in report[f"test_at_{name}"].items()}
    return report


# --------------------------------------------------------------------------- orchestration


def plan(args) -> list[RunSpec]:
    te, se = args.teacher_epochs, args.student_epochs
    return [
        RunSpec(
            "teacher_tf_efficientnet_lite2_imagenet",
            "tf_efficientnet_lite2",
            "offline",
            te,
            1e-3,
            "teacher",
        ),
        RunSpec("teacher_resnet50_scratch", "resnet50", None, te, 2e-3, "teacher"),
        RunSpec("teacher_vgg16_bn_scratch", "vgg16_bn", None, te, 1e-3, "teacher"),
        RunSpec(
            "student_tf_efficientnet_lite0_imagenet",
            "tf_efficientnet_lite0",
            "offline",
            se,
            1e-3,
            "student",
        ),
        RunSpec(
            "student_tf_efficientnet_lite0_imagenet_kd",
            "tf_efficientnet_lite0",
            "offline",
            se,
            1e-3,
            "student",
            distill=True,
        ),
        RunSpec("student_mobilenetv2_100_scratch", "mobilenetv2_100", None, se, 2e-3, "student"),
        RunSpec(
            "student_mobilenetv2_100_scratch_kd",
            "mobilenetv2_100",
            None,
            se,
            2e-3,
            "student",
            distill=True,
        ),
        RunSpec(
            "ablation_lite0_focal",
            "tf_efficientnet_lite0",
            "offline",
            se,
            1e-3,
            "ablation",
            loss="focal",
        ),
        RunSpec(
            "ablation_lite0_balanced_sampler",
            "tf_efficientnet_lite0",
            "offline",
            se,
            1e-3,
            "ablation",
            loss="bce_balanced_sampler",
        ),
    ]


def save_student(model, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(
        {
            k: v.detach().to("cpu", torch.float16).contiguous()
            for k, v in model.state_dict().items()
        },
        str(path),
    )


def write_outputs(out: Path, rows, all_logits: dict, results: dict) -> None:
    from train.checkpoints import write_logits_csv

    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    write_logits_csv(out / "logits.csv", rows, all_logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument(
        "--weights",
        type=Path,
        required=True,
        help="folder with <backbone>.safetensors ImageNet backbones",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--teacher-epochs", type=int, default=25)
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--deadline-s", type=float, default=480, help="start no new model after this many seconds"
    )
    parser.add_argument("--only", nargs="*", help="run only these plan names")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "log.txt")],
    )
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    bank, labels, rows = load_bank(args.cache, device, args.limit)
    logger.info("loaded %d images to %s in %.1fs", len(rows), device, time.perf_counter() - started)
    runner = Runner(args, bank, labels, rows, device)
    all_index = torch.arange(len(rows), device=device)
    labels_np = labels.cpu().numpy()
    val, test = runner.index["val"].cpu().numpy(), runner.index["test"].cpu().numpy()
    results = {
        "config": {k: str(v) for k, v in vars(args).items()},
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "models": {},
    }
    all_logits, teachers = {}, []
    for spec in plan(args):
        if args.only and spec.name not in args.only:
            continue
        if time.perf_counter() - started > args.deadline_s:
            logger.info("deadline reached: skipping %s", spec.name)
            results["models"][spec.name] = {"skipped": "deadline"}
            continue
        run_started = time.perf_counter()
        model, history, best_epoch = runner.fit(spec, teachers if spec.distill else ())
        logits = runner.logits(model, spec, all_index)
        all_logits[spec.name] = logits
        metrics = evaluate(labels_np[val], logits[val], labels_np[test], logits[test])
        metrics.update(
            spec=asdict(spec),
            best_epoch=best_epoch,
            history=history,
            seconds=round(time.perf_counter() - run_started, 1),
            parameters=sum(p.numel() for p in model.parameters()),
        )
        results["models"][spec.name] = metrics
        logger.info(
            "%s: %s",
            spec.name,
            {k: metrics[k] for k in ("val_auroc", "test_auroc", "test_auroc_ci95")},
        )
        if spec.role == "teacher":
            teachers.append((model, normalisation_for(spec.backbone, spec.pretrained)))
        elif spec.role == "student":
            save_student(model, args.out / f"{spec.name}.safetensors")
        if teachers and spec.role == "teacher":
            ensemble = np.mean([all_logits[n] for n in all_logits if n.startswith("teacher")], 0)
            all_logits["teacher_ensemble"] = ensemble
            results["models"]["teacher_ensemble"] = evaluate(
                labels_np[val], ensemble[val], labels_np[test], ensemble[test]
            )
        write_outputs(args.out, rows, all_logits, results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(args.out, rows, all_logits, results)
    logger.info("done in %.0fs", results["seconds"])


if __name__ == "__main__":
    main()
