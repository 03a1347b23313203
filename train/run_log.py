"""The per-epoch training log: a CSV file, plus TensorBoard when its package is installed."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


class RunLog:
    """CSV log, plus TensorBoard when its package is installed."""

    def __init__(self, out: Path, tensorboard: bool):
        self.path = out / "log.csv"
        new = not self.path.exists()
        self.handle = open(self.path, "a", newline="")
        self.writer = csv.writer(self.handle, lineterminator="\n")
        if new:
            self.writer.writerow(["epoch", "loss", "val_auroc", "images_per_second", "lr"])
        self.board = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                logger.warning(
                    "tensorboard is not installed; writing the CSV log only "
                    "(pip install tensorboard)"
                )

    def write(self, epoch, loss, val_auroc, rate, lr):
        self.writer.writerow([epoch, f"{loss:.5f}", f"{val_auroc:.5f}", f"{rate:.1f}", f"{lr:.3g}"])
        self.handle.flush()
        if self.board:
            self.board.add_scalar("loss/train", loss, epoch)
            self.board.add_scalar("auroc/val", val_auroc, epoch)
            self.board.add_scalar("throughput/images_per_second", rate, epoch)

    def close(self):
        self.handle.close()
        if self.board:
            self.board.close()
