"""Make the committed test bundle ``tests/data/tiny-bundle`` (a few KB): a seeded, untrained
``tiny_cnn`` exported to TFLite float32 through the real export path.

    python tests/data/make_tiny_bundle.py [--out tests/data/tiny-bundle] [--overwrite]

Needs the train and compress extras; the tests that *use* the bundle need only the app extra.
``tests/compress/test_tiny_bundle.py`` runs this again into a temporary folder and checks that
the regenerated file gives the committed file's outputs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

SIZE = 64
SEED = 0
CARD = {
    "name": "tiny-test-bundle",
    "architecture": "tiny_cnn",
    "labels": ["no_fracture", "fracture"],
    "preprocessing": {"input_size": SIZE, "mean": 0.5, "std": 0.25, "fill": 0.0},
    # Both thresholds inside the untrained model's narrow probability range, so tests see all
    # three verdicts; not a clinical model.
    "operating_points": {"doubt": 0.3, "fracture": 0.7},
    "calibration_temperature": 1.0,
    "training_data": {"note": "untrained: a fixture for the runtime tests, not a model"},
}


def _spread_logits(model) -> None:
    """Scale and shift the head so that films of different brightness and texture get logits
    around 0 with a standard deviation of 1.5: the tests then see all three verdicts."""
    import numpy as np
    import torch

    from edge_app.preprocess import PreprocessConfig, preprocess

    rng = np.random.default_rng(SEED)
    config = PreprocessConfig.from_card(CARD)
    films = []
    for _ in range(64):  # letterboxed like the app's inputs: random shapes, exposures, textures
        shape = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
        film = rng.uniform(0.1, 0.9) + rng.uniform(0.05, 0.4) * rng.standard_normal(shape)
        films.append(preprocess(np.clip(film, 0, 1).astype(np.float32), config)[0])
    batch = torch.from_numpy(np.stack(films)[:, None])
    with torch.no_grad():
        logits = model(batch)
        model.fracture_head.weight.mul_(1.5 / float(logits.std()))
        model.fracture_head.bias.sub_(float(model(batch).median()))


def tiny_model():
    """The bundle's torch model, rebuilt exactly (seeded): for tests comparing against torch."""
    import torch

    from train.models import create_model

    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = create_model("tiny_cnn").eval()
        # Non-trivial BatchNorm statistics, so eval-mode BN is not the identity.
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        _spread_logits(model)
    return model


def make(out: Path) -> Path:
    from compress.export import export_bundle

    export_bundle(None, out, mode="float32", net=tiny_model(), card=dict(CARD))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tiny-bundle")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists():
        if not args.overwrite:
            print(f"{args.out} exists; pass --overwrite to replace it", file=sys.stderr)
            return 2
        shutil.rmtree(args.out)
    print(make(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
