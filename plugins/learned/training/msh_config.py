"""The base model trainer's configuration and checkpoints: :class:`TrainConfig` (stored in every
checkpoint), which options a resumed run may change (:func:`resolve_config`), and the
checkpoint format of :mod:`plugins.learned.training.msh` (read by :func:`load_checkpoint`).
Other trainers (HC's) subclass :class:`TrainConfig` and resolve theirs with the same rules."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.learned.training.data import DEFAULT_EVAL_IMAGES, DEFAULT_KODAK
from plugins.learned.training.precision import QUANTIZATIONS
from plugins.learned.training.run import CHECKPOINT_NAME, CheckpointError, read_checkpoint

#: Format of the checkpoints this trainer writes; v1 checkpoints without schedule, mode or legs
#: still resume.
CHECKPOINT_FORMAT = "bench-learned-msh-checkpoint-v1"
CHECKPOINT_FORMATS = (CHECKPOINT_FORMAT,)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Stored in every checkpoint. A trainer of another
    model subclasses it with that model's fields (:class:`plugins.hc.train.HCTrainConfig`)."""

    data: str = ""
    out: str = ""
    N: int = 128
    M: int = 192
    #: 0.115, between CompressAI's quality 7 (0.0932) and 8 (0.18): the lowest rate the issue
    #: allows is where our N=128/M=192 base is closest to the published curve (it loses less
    #: PSNR per e-fold of rate than the published model), and at a fixed lambda its Kodak rate
    #: keeps falling as it trains (0.11: 1.59 bpp at 234,000 iterations, 1.502 at 407,500), so
    #: 0.115 (1.521 bpp at 406,773) keeps it above the 1.5 bpp the learned curves need; 0.18
    #: gave 1.83-1.93 bpp, 0.13 1.64. JOURNAL.md: the lambda A/Bs at 190,000, 229,532 and
    #: 399,250 iterations. HC keeps 0.18 (its shipped weights).
    lmbda: float = 0.115
    #: The decoder's view of the latent in training (:data:`~.precision.QUANTIZATIONS`):
    #: ``ste`` (rounded, straight-through; the relay since 206,250 iterations, JOURNAL.md: the A/B)
    #: or ``noise`` (CompressAI's proxy). Stored configs without it trained with ``noise``
    #: (:data:`LEGACY`).
    quantization: str = "ste"
    iterations: int = 400_000
    #: 2 crops of 256 px (the pixels of 8 of 128 px): a 16x16 latent and a 4x4 hyper-latent
    #: per crop, where 128 px left the hyperprior a 2x2 grid that is mostly padding (JOURNAL.md:
    #: the A/B at 184,750 iterations). Stored configs keep theirs.
    batch: int = 2
    crop: int = 256
    #: Smallest random downscale of a training crop (:func:`~.data.sample_batch`); 1: plain
    #: crops. 0.5 cuts squares of 1 to 2 crop sides (capped by the image: 321 px for the BSDS
    #: photos) and shrinks them to ``crop``, which washes out the JPEG artefacts of most
    #: training photos (JOURNAL.md: the A/B of 11,000 iterations). A stored config without it
    #: (written before the option) used plain crops: :meth:`from_dict`.
    scale_min: float = 0.5
    #: Peak learning rate of the schedule (:class:`CosineSchedule`): linear warm-up over
    #: ``warmup`` iterations from ``start_iteration``, cosine decay to ``lr_min`` at
    #: ``iterations`` (the planned end; a relay may move it).
    lr: float = 1e-4
    lr_min: float = 1e-5
    warmup: int = 1000
    aux_lr: float = 1e-3
    clip: float = 1.0
    #: Decay of the moving average of the weights that is evaluated beside the live weights and
    #: exported (:mod:`plugins.learned.training.ema`); 0: none. A resumed run may change it.
    ema_decay: float = 0.0
    #: torch threads; 0 adapts to the machine's load (:class:`AdaptiveThreads`).
    threads: int = 1
    #: Stop this process at this iteration without moving the planned end (0: run to the end).
    stop_at: int = 0
    #: Stop this process, with a checkpoint, once its loop has run this many seconds (0: no
    #: limit): a lent GPU's leg must end inside its lease.
    time_limit: float = 0.0
    #: Threads that cut and resize the training crops (:func:`~.data.sample_batch`); 0: the
    #: training thread itself. A GPU needs several to be fed; the batches are the same.
    loader_threads: int = 0
    #: ``cpu`` or ``cuda``; ``fp32``, ``bf16`` (autocast of the transforms) or ``auto`` (the
    #: fastest of the validated modes, timed at start); channels_last memory format.
    device: str = "cpu"
    precision: str = "auto"
    channels_last: bool = True
    checkpoint_every: int = 250
    eval_every: int = 1000
    eval_images: tuple[str, ...] = DEFAULT_EVAL_IMAGES
    kodak: str = DEFAULT_KODAK
    log_every: int = 25
    seed: int = 0
    #: A ``bench train-export`` file to start a new run from (its iteration count carries on).
    #: Shipped weights hold no optimiser state, so this is how a later session continues the
    #: bundled model when the resumable checkpoint is gone.
    init: str = ""
    #: Iteration the run started at: 0, or the iteration count of the ``init`` weights. The
    #: schedule's warm-up starts here (a fresh Adam state on trained weights otherwise takes
    #: full-size first steps and undoes hours of training).
    start_iteration: int = 0

    #: The decoder views of the latent this trainer implements.
    QUANTIZATIONS = QUANTIZATIONS
    #: Fields that define the model and the objective; a resumed run must keep them. The
    #: schedule (lr, lr_min, warmup, iterations) may change on resume; the change is logged.
    IDENTITY = (
        "data", "N", "M", "lmbda", "quantization", "batch", "crop", "scale_min", "aux_lr", "clip",
        "seed",
    )  # fmt: skip
    #: The objective's fields (with the gradient-norm bound, which shapes every step): a run
    #: started from exported weights notes, on its first leg, those it changes
    #: (:func:`~plugins.learned.training.start.start_from_weights`); ``bench train-fork``
    #: changes them for an A/B arm.
    OBJECTIVE = ("lmbda", "quantization", "batch", "crop", "scale_min", "clip")
    #: What a stored config written before a field existed meant by its absence.
    LEGACY = {"scale_min": 1.0, "quantization": "noise"}
    #: The model's architecture: the metadata exported weights must match to start a run
    #: (:func:`~plugins.learned.training.start.start_from_weights`).
    ARCHITECTURE = ("N", "M")
    SCHEDULE = ("lr", "lr_min", "warmup", "iterations")
    #: Settings of one process that a resumed run does not inherit (a GPU leg's device, an A/B
    #: arm's forced precision or stop): they fall back to the defaults unless given again.
    PER_PROCESS = (
        "stop_at", "time_limit", "loader_threads", "device", "precision", "channels_last",
    )  # fmt: skip
    #: Identity fields that name a folder: a resumed run compares them resolved.
    PATHS = ("data",)

    def __post_init__(self) -> None:
        if self.quantization not in self.QUANTIZATIONS:
            raise ValueError(
                f"quantization must be one of {', '.join(self.QUANTIZATIONS)} for this trainer, "
                f"got {self.quantization!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["eval_images"] = list(self.eval_images)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = dict(d)
        if "warmup_from" in d:  # v1 checkpoints (constant lr): the schedule starts when resumed
            d.setdefault("start_iteration", max(0, d.pop("warmup_from")))
        for k, v in cls.LEGACY.items():
            d.setdefault(k, v)
        kw = {k: v for k, v in d.items() if k in names}
        if "eval_images" in kw:
            kw["eval_images"] = tuple(kw["eval_images"])
        return cls(**kw)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of this trainer (file, or ``checkpoint.pt`` in a directory).

    Raises :class:`CheckpointError` when it is missing, corrupt, or not a training checkpoint.
    """
    required = ("format", "model", "optimizer", "aux_optimizer", "iteration", "rng", "config")
    return read_checkpoint(path, CHECKPOINT_FORMATS, required)


def same_path(a: str, b: str) -> bool:
    """Whether two path strings name the same file or folder once resolved (relative to the
    current directory, symbolic links followed)."""
    return Path(a).resolve() == Path(b).resolve()


def resolve_config(
    out: str | Path,
    resume: bool,
    *,
    config_type: type[TrainConfig] = TrainConfig,
    load: Callable[[Path], dict[str, Any]] = load_checkpoint,
    **options: Any,
) -> TrainConfig:
    """The config of a run: ``options`` for a new run, the checkpoint's for ``resume``.

    A new run from exported weights (``init``) continues their schedule where it was unless
    the options say otherwise (:func:`schedule_of_weights`): a fresh run's defaults (peak 1e-4,
    no weight average) would undo a decayed schedule.

    ``config_type`` is :class:`TrainConfig` or a trainer's subclass of it, ``load`` that
    trainer's checkpoint reader (:class:`CheckpointError` when the checkpoint is missing or not
    its kind). When resuming, options that define the model or optimisation
    (``config_type.IDENTITY``) must be omitted (``None``) or equal to the stored ones (paths
    compared resolved: ``../shared/x`` and ``/work/shared/x`` are the same data); operational
    options (iterations, threads, checkpoint/eval/log intervals, eval images) may change, and
    per-process ones (``PER_PROCESS``) fall back to the defaults unless given again.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if "eval_images" in options:
        options["eval_images"] = tuple(options["eval_images"])
    out = Path(out)
    ckpt_path = out / CHECKPOINT_NAME
    if not resume:
        if ckpt_path.exists():
            raise CheckpointError(
                f"{ckpt_path} already exists: pass --resume to continue it, or choose another --out"
            )
        if options.get("init"):
            options = {**schedule_of_weights(options["init"]), **options}
        cfg = config_type(**options, out=str(out))
        if not cfg.data:
            raise ValueError("--data is required for a new training run")
        cfg.data = str(Path(cfg.data).resolve())
        return cfg
    stored = config_type.from_dict(load(ckpt_path)["config"])
    for k in config_type.PATHS:
        if k in options and same_path(options[k], getattr(stored, k)):
            del options[k]  # the same folder, however it was written: keep the stored form
    conflicts = [
        f"{k}={options[k]!r} (checkpoint has {getattr(stored, k)!r})"
        for k in config_type.IDENTITY
        if k in options and options[k] != getattr(stored, k)
    ]
    if conflicts:
        raise CheckpointError("cannot resume with a different config: " + ", ".join(conflicts))
    defaults = config_type()
    per_process = {k: getattr(defaults, k) for k in config_type.PER_PROCESS}
    return dataclasses.replace(stored, **{**per_process, **options}, out=str(out))


def schedule_of_weights(path: str | Path) -> dict[str, Any]:
    """The schedule options (planned end, peak rate, floor, weight-average decay) that carry the
    run exported in ``path`` on from its iteration, read from its sidecar
    (:func:`plugins.learned.training.schedule.continued_from_weights`); ``{}`` without one."""
    import json

    from plugins.learned.training.schedule import continued_from_weights
    from plugins.learned.weights.format import sidecar_path

    side = sidecar_path(path)
    return continued_from_weights(json.loads(side.read_text())) if side.is_file() else {}


def describe_schedule(cfg: TrainConfig) -> str:
    """The run's schedule in words, for the console."""
    average = f"weight average {cfg.ema_decay}" if cfg.ema_decay else "no weight average"
    return (
        f"warm-up over {cfg.warmup} iterations to lr {cfg.lr:.3g}, cosine to {cfg.lr_min:.3g} "
        f"at iteration {cfg.iterations}, {average}"
    )


def schedule_changes(before: TrainConfig, after: TrainConfig) -> dict[str, list[Any]]:
    """The schedule fields (``SCHEDULE``) a resumed run changed: ``{name: [before, after]}``."""
    return {
        k: [getattr(before, k), getattr(after, k)]
        for k in before.SCHEDULE
        if getattr(before, k) != getattr(after, k)
    }


def add_config_options(
    parser: argparse.ArgumentParser, config_type: type[TrainConfig] = TrainConfig
) -> None:
    """The command-line options of ``config_type``'s fields (each ``None`` unless given:
    the config's default for a new run, the stored value for a resumed one), ``--resume`` and
    ``--init``. A trainer adds ``--out``, its own model's fields and its export options."""
    defaults = config_type()
    parser.add_argument("--data", help="training image folder (never Kodak); for a new run")
    for name, typ, text in (
        ("N", int, "channels N (default 128)"),
        ("M", int, "latent channels M (default 192)"),
        ("lmbda", float, f"loss = lmbda*255^2*MSE + bpp (default {defaults.lmbda})"),
        ("quantization", str, "the decoder's latent in training: ste (rounded around the "
                              "prior mean, straight-through gradient; the rate keeps the noise) "
                              f"or noise (CompressAI's proxy); default {defaults.quantization}"),
        ("iterations", int, "planned last iteration: the schedule decays to --lr-min there"),
        ("batch", int, "batch size (default 2)"),
        ("crop", int, "crop side (default 256)"),
        ("scale-min", float, "crops of side crop/s, s uniform in [scale-min, 1], shrunk to "
                             "crop (antialiased); default 0.5; 1: plain crops"),
        ("clip", float, "gradient-norm bound of the main parameters (default 1.0; 0: none)"),
        ("lr", float, "peak Adam learning rate (default 1e-4)"),
        ("lr-min", float, "learning rate at the planned end (--iterations); cosine decay"),
        ("warmup", int, "linear warm-up iterations (default 1000)"),
        ("ema-decay", float, "keep, evaluate and export a moving average of the weights with "
                             "this decay, e.g. 0.9995 (default 0: none)"),
        ("threads", int, "torch threads (default 1); 0 adapts to the machine's load"),
        ("stop-at", int, "stop at this iteration, keeping the planned end (--iterations)"),
        ("time-limit", float, "stop (with a checkpoint) after this many seconds of training"),
        ("loader-threads", int, "threads cutting the training crops (default 0: the training "
                                "thread); a GPU needs several"),
        ("checkpoint-every", int, "iterations between checkpoints (default 250)"),
        ("eval-every", int, "iterations between Kodak-subset evals; 0: none (default 1000)"),
        ("seed", int, "random seed (default 0)"),
        ("log-every", int, "iterations between log records"),
        ("kodak", str, "Kodak folder (evaluation only)"),
        ("device", str, "cpu or cuda (auto precision there: mixed)"),
        ("precision", str, "fp32, bf16 (autocast of the transforms), mixed (bf16 with the "
                           "analysis transform in fp32) or auto (default): the fastest of fp32 "
                           "and the modes whose latest recorded verdict is a pass"),
    ):  # fmt: skip
        parser.add_argument(f"--{name}", type=typ, default=None, help=text)
    parser.add_argument("--eval-images", default=None, help="comma-separated Kodak names")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="memory format (default channels_last)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    parser.add_argument("--init", default=None, help="start a new run from exported weights")


def config_options(args: argparse.Namespace, config_type: type[TrainConfig]) -> dict[str, Any]:
    """The ``config_type`` fields given on the command line (``None``: not given), for
    :func:`resolve_config`; ``--eval-images`` split at commas. ``out`` is the trainer's."""
    options = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(config_type)
        if f.name != "out" and hasattr(args, f.name)
    }
    if options.get("eval_images") is not None:
        options["eval_images"] = tuple(s.strip() for s in args.eval_images.split(",") if s.strip())
    return options
