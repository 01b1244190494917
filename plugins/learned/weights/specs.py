"""Weights specs: which file a learned codec's base model comes from, verified.

A weights *spec* is a string:

``bundled:NAME``
    Weights trained by this project with ``bench train`` and shipped with it, exported by
    ``bench train-export`` as ``NAME.safetensors`` (float16 parameters plus the int32
    entropy-coder tables) with a ``NAME.json`` sidecar describing the training run. They are
    looked up in :data:`BUNDLED_DIR` (``plugins/learned/weights/``), then in the folders of the
    ``BENCH_WEIGHTS_PATH`` environment variable (``os.pathsep``-separated). The default of every
    learned codec is :data:`DEFAULT_WEIGHTS`.
``zoo:mbt2018-mean:Q`` (``Q`` = 1..8, optionally ``zoo:mbt2018-mean:Q:ms-ssim``)
    CompressAI's pretrained ``mbt2018-mean`` (MeanScaleHyperprior). The URL comes from
    CompressAI's own table (``compressai.zoo.image.model_urls``). The file is cached where
    ``torch.hub`` caches it, ``$TORCH_HOME/hub/checkpoints/<file name of the URL>``. The file name
    ends in ``-<hex>.pth.tar`` where ``<hex>`` is the first 8 hex digits of the file's sha256
    (torch.hub's naming rule, ``torch.hub.HASH_REGEX``). CompressAI's own loader
    (``load_state_dict_from_url(url)``) checks *nothing* (``check_hash`` defaults to False,
    and a cached file is never re-checked) and unpickles with ``weights_only=False``; this
    module instead downloads with ``torch.hub.download_url_to_file(url, dst, hash_prefix)``
    (which verifies the prefix while downloading), re-verifies the sha256 prefix of the cached
    file on every load, and loads it with ``torch.load(weights_only=True)``.
``/path/to/file`` (anything else)
    A user's checkpoint: a bench ``.safetensors`` export, or a CompressAI-style state dict
    (``.pth``/``.pth.tar``/``.pt``, loaded with ``torch.load(weights_only=True)``, keys renamed
    with ``compressai.zoo.pretrained.load_pretrained``).

Every resolved spec carries the file's path and sha256 and an honest description; codecs
report them in :class:`bench.WeightsInfo`. Loading is in :mod:`plugins.learned.weights.loading`,
the file format in :mod:`plugins.learned.weights.format`. Nothing here imports torch or
compressai at module import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.codec import CodecUnavailable
from bench.hashing import sha256_file
from plugins.learned.weights.format import read_sidecar

#: Folder of the weights shipped with the project.
BUNDLED_DIR = Path(__file__).resolve().parent
#: Name of the bundled base model (N=128, M=192, lambda=0.11).
BUNDLED_NAME = "msh-n128-m192-l1100-it398250"
#: Default weights of every learned codec.
DEFAULT_WEIGHTS = f"bundled:{BUNDLED_NAME}"
#: Environment variable with extra folders searched for ``bundled:NAME``.
WEIGHTS_PATH_ENV = "BENCH_WEIGHTS_PATH"

ZOO_ARCHITECTURE = "mbt2018-mean"

TRAIN_FIX = (
    "train the base model with `bench train --out checkpoints/msh --data TRAIN_FOLDER` and "
    "export it with `bench train-export --checkpoint checkpoints/msh --out "
    f"plugins/learned/weights/{BUNDLED_NAME}.safetensors`; or pass weights=/path/to/file, or "
    "weights='zoo:mbt2018-mean:8' when online"
)


class WeightsError(CodecUnavailable):
    """A weights spec cannot be resolved, downloaded, verified or loaded."""


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights spec turned into a verified file and its provenance."""

    spec: str
    source: str  # "bundled" | "zoo" | "user"
    path: Path
    sha256: str
    description: str
    file_format: str  # "safetensors" | "state-dict"
    sidecar: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def weights_bytes(self) -> int:
        return self.path.stat().st_size

    def info(self):
        from bench.codec import WeightsInfo

        kodak = (self.sidecar or {}).get("kodak_eval") or {}
        base_kodak = None
        if "bpp_mean" in kodak and "psnr_rgb_mean" in kodak:
            base_kodak = {
                "bpp": kodak["bpp_mean"],
                "psnr_rgb": kodak["psnr_rgb_mean"],
                "num_images": kodak.get("num_images"),
            }
        return WeightsInfo(
            source=self.source,
            path=str(self.path),
            sha256=self.sha256,
            description=self.description,
            base_kodak=base_kodak,
        )


def bundled_search_path() -> list[Path]:
    """Folders searched for ``bundled:NAME``: the shipped folder, then ``$BENCH_WEIGHTS_PATH``."""
    extra = [Path(p) for p in os.environ.get(WEIGHTS_PATH_ENV, "").split(os.pathsep) if p]
    return [BUNDLED_DIR, *extra]


def find_bundled(name: str) -> Path | None:
    """Path of ``NAME.safetensors`` in the bundled search path, or ``None``."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise WeightsError(f"invalid bundled weights name {name!r}", TRAIN_FIX)
    for folder in bundled_search_path():
        candidate = folder / f"{name}.safetensors"
        if candidate.is_file():
            return candidate
    return None


def _describe_bench_weights(path: Path, sidecar: dict[str, Any] | None, source: str) -> str:
    who = "bundled with bench" if source == "bundled" else f"user file {path.name}"
    if not sidecar:
        return (
            f"MeanScaleHyperprior weights ({who}) exported by `bench train-export`; no sidecar, "
            "training provenance unknown; NOT the paper's or CompressAI's pretrained model"
        )
    cfg = sidecar.get("config", {})
    kodak = sidecar.get("kodak_eval") or {}
    point = ""
    if "bpp_mean" in kodak:
        point = (
            f"; non-progressive Kodak point {kodak['bpp_mean']:.3f} bpp / "
            f"{kodak.get('psnr_rgb_mean', float('nan')):.2f} dB"
        )
    shipped = sidecar.get("shipped_weights") or {}
    average = ""
    if shipped.get("weights") == "average":
        average = (
            f", moving average of the weights (decay {shipped.get('decay')}, from iteration "
            f"{shipped.get('since_iteration')})"
        )
    return (
        f"project's small MeanScaleHyperprior N={cfg.get('N')} M={cfg.get('M')} "
        f"lambda={cfg.get('lmbda')} ({who}) trained by `bench train` for "
        f"{sidecar.get('iterations')} iterations ({sidecar.get('hours_trained', 0.0):.1f} h, "
        f"batch {cfg.get('batch')}, {cfg.get('crop')}px crops{average}){point}; NOT the "
        "paper's or CompressAI's pretrained model"
    )


def _zoo_url(quality: int, metric: str) -> str:
    from plugins.learned.compat import import_compressai

    import_compressai()
    from compressai.zoo import image as zoo_image

    try:
        return zoo_image.model_urls[ZOO_ARCHITECTURE][metric][quality]
    except KeyError as exc:
        raise WeightsError(
            f"CompressAI has no pretrained {ZOO_ARCHITECTURE} for metric={metric} "
            f"quality={quality}",
            "use zoo:mbt2018-mean:Q with Q in 1..8",
        ) from exc


def zoo_cache_path(url: str) -> Path:
    """Where torch.hub caches ``url``: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    from urllib.parse import urlparse

    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def hash_prefix_of(filename: str) -> str | None:
    """The sha256 prefix torch.hub reads from a file name (``name-<hex>.ext``), if any."""
    import torch.hub

    match = torch.hub.HASH_REGEX.search(filename)
    return match.group(1) if match and match.group(1) else None


def resolve_zoo(quality: int, metric: str = "mse", *, download: bool = True) -> ResolvedWeights:
    """Find (or download) and verify CompressAI's pretrained mbt2018-mean of ``quality``."""
    url = _zoo_url(quality, metric)
    cached = zoo_cache_path(url)
    prefix = hash_prefix_of(cached.name)
    if prefix is None or len(prefix) < 8:
        raise WeightsError(f"zoo file name {cached.name} carries no sha256 prefix to check")
    if not cached.is_file():
        if not download:
            raise WeightsError(f"{cached} is not cached", f"download {url} (needs network)")
        import torch.hub

        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=prefix, progress=False)
        except Exception as exc:  # URLError offline, RuntimeError on hash mismatch
            raise WeightsError(
                f"cannot download CompressAI's {ZOO_ARCHITECTURE} q{quality} from {url}: "
                f"{type(exc).__name__}: {exc}",
                f"go online once, or place the verified file at {cached}; offline, use the "
                f"bundled weights ({DEFAULT_WEIGHTS})",
            ) from exc
    digest = sha256_file(cached)
    if not digest.startswith(prefix):
        raise WeightsError(
            f"{cached} fails its hash check: sha256 {digest[:16]}... does not start with "
            f"{prefix} (from its file name)",
            f"delete {cached} and download it again",
        )
    return ResolvedWeights(
        spec=f"zoo:{ZOO_ARCHITECTURE}:{quality}" + ("" if metric == "mse" else f":{metric}"),
        source="zoo",
        path=cached,
        sha256=digest,
        description=(
            f"CompressAI's pretrained {ZOO_ARCHITECTURE} (Minnen et al. 2018 without context "
            f"model), quality {quality}, metric {metric}, from {url}; sha256 prefix {prefix} "
            "verified"
        ),
        file_format="state-dict",
    )


def resolve(spec: str | os.PathLike | None = None, *, download: bool = True) -> ResolvedWeights:
    """Turn a weights spec (see module doc) into a verified :class:`ResolvedWeights`.

    Raises :class:`WeightsError` (a :class:`bench.CodecUnavailable`) with a fix when the
    file is missing or fails verification.
    """
    spec = DEFAULT_WEIGHTS if spec is None else os.fspath(spec)
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        path = find_bundled(name)
        if path is None:
            where = ", ".join(str(p) for p in bundled_search_path())
            raise WeightsError(
                f"bundled weights {name}.safetensors not found (searched {where})", TRAIN_FIX
            )
        sidecar = read_sidecar(path)
        return ResolvedWeights(
            spec=spec,
            source="bundled",
            path=path,
            sha256=sha256_file(path),
            description=_describe_bench_weights(path, sidecar, "bundled"),
            file_format="safetensors",
            sidecar=sidecar,
        )
    if spec.startswith("zoo:"):
        parts = spec.split(":")
        if len(parts) not in (3, 4) or parts[1] != ZOO_ARCHITECTURE or not parts[2].isdigit():
            raise WeightsError(f"bad zoo spec {spec!r}", "use zoo:mbt2018-mean:Q[:mse|ms-ssim]")
        metric = parts[3] if len(parts) == 4 else "mse"
        return resolve_zoo(int(parts[2]), metric, download=download)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found", TRAIN_FIX)
    path = path.resolve()
    if path.suffix == ".safetensors":
        sidecar = read_sidecar(path)
        return ResolvedWeights(
            spec=spec,
            source="user",
            path=path,
            sha256=sha256_file(path),
            description=_describe_bench_weights(path, sidecar, "user"),
            file_format="safetensors",
            sidecar=sidecar,
        )
    return ResolvedWeights(
        spec=spec,
        source="user",
        path=path,
        sha256=sha256_file(path),
        description=(
            f"user checkpoint {path.name}: a MeanScaleHyperprior state dict of unknown "
            "provenance (loaded with torch.load(weights_only=True))"
        ),
        file_format="state-dict",
    )


def check_dependencies() -> None:
    """Raise :class:`bench.CodecUnavailable` unless torch, compressai, constriction and
    safetensors are importable (checked without importing them)."""
    import importlib.util

    missing = [
        m
        for m in ("torch", "compressai", "constriction", "safetensors", "scipy")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise CodecUnavailable(
            f"learned codecs need {', '.join(missing)}",
            "pip install torch==2.13.0 (CPU wheel first) compressai==1.2.8 constriction "
            "safetensors scipy",
        )


def check_default_weights() -> None:
    """``check()`` of the learned codecs: dependencies importable and bundled weights present."""
    check_dependencies()
    if find_bundled(BUNDLED_NAME) is None:
        raise CodecUnavailable(
            f"bundled weights {BUNDLED_NAME}.safetensors not found in "
            + ", ".join(str(p) for p in bundled_search_path()),
            TRAIN_FIX,
        )
