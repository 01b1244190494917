"""How far each precision mode's gradients are from float32's, transform by transform.

Speed is not the only cost of a precision mode: a mode whose gradients point elsewhere than the
float32 ones trains a different (noisier) descent. For the weights of a training checkpoint (or a
weights file), on ``--batches`` random training crops, this computes the R-D loss gradient of
every parameter in float32 (the reference) and in each mode (``cpu-bf16-cl``, ``cpu-mixed-cl``),
with the same batch and the same noise draw, and prints per transform (``g_a``, ``h_a``, ``h_s``,
``g_s``) the cosine between the mode's gradient and the reference, and the relative change of the
batch's MSE. The control row, ``fp32 y-jitter``, is float32 with the latent ``y`` multiplied by
``1 + 1e-3 * N(0, 1)``: how much a perturbation of bf16's size at the bottleneck alone moves the
gradients (rounding flips of the straight-through quantiser included). A mode whose cosines fall
well below the control's is noisier than its rounding of ``y`` explains.

    python benchmarks/precision_gradients.py --checkpoint ~/.cache/bench/train/msh-n128-m192-l1100

One run on 2026-12-04 (AMD EPYC avx512_bf16, 1 thread, relay checkpoint at 224,750 iterations,
5 batches of 2 x 256 px, lambda 0.13, ste), median cosine to float32 of g_a / h_a / h_s / g_s:
bf16 0.767 / 0.998 / 0.999 / 0.974 (MSE +0.60 %), mixed 0.979 / 0.998 / 0.999 / 0.980
(+0.38 %), control 0.999 / 1.000 / 1.000 / 0.999.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugins.learned.training.data import load_training_images, sample_batch  # noqa: E402
from plugins.learned.training.msh_config import CHECKPOINT_FORMAT, TrainConfig  # noqa: E402
from plugins.learned.training.precision import TrainMode, cpu_model, rd_forward  # noqa: E402
from plugins.learned.training.run import read_checkpoint  # noqa: E402
from plugins.learned.weights.format import build_model, load_weights  # noqa: E402

TRAIN = ROOT.parent / "shared" / "datasets" / "train"
TRANSFORMS = ("g_a", "h_a", "h_s", "g_s")
MODES = ("cpu-bf16-cl", "cpu-mixed-cl")
CONTROL = "fp32 y-jitter"
JITTER = 1e-3


def load_model(args):
    """The model to probe: a checkpoint's live weights, or a weights file's."""
    if args.checkpoint:
        state = read_checkpoint(args.checkpoint, [CHECKPOINT_FORMAT], ["model"])
        config = state.get("config", {})
        model = build_model(int(config.get("N", 128)), int(config.get("M", 192)))
        model.load_state_dict(state["model"])
        return model, config
    model, _meta = load_weights(args.weights)
    return model, {}


def gradients(model, x, mode: TrainMode, args, seed: int, jitter: float = 0.0):
    """``(mse, {transform: flat gradient})`` of one forward + backward pass in ``mode``."""
    import torch

    hook = None
    if jitter:
        # its own generator: the training noise draws stay those of the reference
        generator = torch.Generator().manual_seed(seed)
        hook = model.g_a.register_forward_hook(
            lambda _m, _i, y: y * (1 + jitter * torch.randn(y.shape, generator=generator))
        )
    model.zero_grad(set_to_none=True)
    mode.prepare_model(model)
    torch.manual_seed(seed)
    try:
        terms = rd_forward(model, mode.prepare_batch(x), args.lmbda, mode, args.quantization)
        terms["loss"].backward()
    finally:
        if hook is not None:
            hook.remove()
    grads = {
        t: torch.cat([p.grad.flatten() for p in getattr(model, t).parameters()]) for t in TRANSFORMS
    }
    return float(terms["mse"].detach()), grads


def cosine(a, b) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a bench train checkpoint (directory or file)")
    source.add_argument("--weights", help="a weights file (.safetensors); default: shipped")
    parser.add_argument("--data", default=str(TRAIN), help="training image folder")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--scale-min", type=float, default=0.5)
    parser.add_argument("--lmbda", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--quantization", default=None, help="default: the checkpoint's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if not args.checkpoint and not args.weights:
        from plugins.learned.weights import BUNDLED_DIR, BUNDLED_NAME

        args.weights = str(BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors")
    model, config = load_model(args)
    model.train()
    defaults = TrainConfig()
    if args.lmbda is None:
        args.lmbda = float(config.get("lmbda", defaults.lmbda))
    args.quantization = args.quantization or config.get("quantization", defaults.quantization)
    images = load_training_images(args.data, args.crop, log=lambda _m: None)
    rng = np.random.default_rng(args.seed)
    print(
        f"CPU: {cpu_model()}; torch {torch.__version__}, {args.threads} thread(s); "
        f"{args.checkpoint or args.weights}; {args.batches} batches of {args.batch} x "
        f"{args.crop} px, lambda {args.lmbda}, quantization {args.quantization}"
    )
    rows: dict[str, list[list[float]]] = {m: [] for m in (*MODES, CONTROL)}
    for i in range(args.batches):
        x = sample_batch(images, rng, args.batch, args.crop, args.scale_min)
        ref_mse, ref = gradients(model, x, TrainMode("cpu", "fp32", True), args, seed=i)
        for name in rows:
            mode = TrainMode("cpu", "fp32", True) if name == CONTROL else TrainMode.parse(name)
            jitter = JITTER if name == CONTROL else 0.0
            mse, grads = gradients(model, x, mode, args, seed=i, jitter=jitter)
            rows[name].append(
                [cosine(ref[t], grads[t]) for t in TRANSFORMS] + [100 * (mse / ref_mse - 1)]
            )
    header = "".join(f"{'cos ' + t:>10}" for t in TRANSFORMS) + f"{'MSE %':>9}"
    print(f"{'mode (median of batches)':<26}{header}")
    for name, values in rows.items():
        medians = [statistics.median(col) for col in zip(*values, strict=True)]
        cells = "".join(f"{v:>10.3f}" for v in medians[:-1]) + f"{medians[-1]:>+9.2f}"
        print(f"{name:<26}{cells}")


if __name__ == "__main__":
    main()
