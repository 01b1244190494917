"""Training data: the training folder's images in RAM, random crops, the Kodak evaluation
images, and the provenance hash of a training set. Kodak is used for evaluation only:
:func:`load_training_images` refuses a training folder that holds a Kodak image."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.hashing import sha256_file

#: Evaluation images: the project's bundled Kodak copy (never used for training).
DEFAULT_KODAK = os.environ.get(
    "BENCH_KODAK", str(Path(__file__).resolve().parents[3] / "datasets" / "kodak")
)
DEFAULT_EVAL_IMAGES = ("kodim01", "kodim05", "kodim15", "kodim23")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def read_rgb(path: Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def list_images(folder: Path) -> list[Path]:
    """Files under ``folder`` (recursively) with an image suffix, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def manifest_sha256(data: str | Path) -> str:
    """sha256 of ``MANIFEST.tsv`` at the top of the training folder, or of a listing built here.

    The built listing is ``relative/path<TAB>sha256<LF>`` per image, sorted by path.
    """
    folder = Path(data)
    manifest = folder / "MANIFEST.tsv"
    if manifest.is_file():
        return sha256_file(manifest)
    lines = [f"{p.relative_to(folder).as_posix()}\t{sha256_file(p)}\n" for p in list_images(folder)]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def kodak_hashes(kodak: str | Path) -> set[str]:
    """sha256 of every image in the Kodak folder (empty when there is none)."""
    folder = Path(kodak)
    if not folder.is_dir():
        return set()
    return {sha256_file(p) for p in list_images(folder)}


def load_training_images(
    data: str | Path,
    crop: int,
    kodak: str | Path = DEFAULT_KODAK,
    log: Callable[[str], None] = print,
) -> list[np.ndarray]:
    """Decode every image under ``data`` once into RAM as ``(H, W, 3)`` uint8 arrays.

    Images smaller than ``crop`` on either side are skipped with a note; files without an image
    suffix are ignored. Raises ``ValueError`` if the folder is (inside) the Kodak folder, holds a
    file identical to a Kodak image, or holds image-named files that do not decode (all named).
    """
    folder = Path(data).resolve()
    if not folder.is_dir():
        raise ValueError(f"training folder {folder} does not exist")
    kodak_dir = Path(kodak).resolve()
    if folder == kodak_dir or kodak_dir in folder.parents:
        raise ValueError(f"refusing to train on the Kodak evaluation set ({folder})")
    kodak_sha = kodak_hashes(kodak_dir)
    images: list[np.ndarray] = []
    skipped = 0
    unreadable: list[str] = []
    for path in list_images(folder):
        if kodak_sha and sha256_file(path) in kodak_sha:
            raise ValueError(f"refusing to train on a Kodak image: {path}")
        try:
            img = read_rgb(path)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for damaged files
            unreadable.append(f"{path.relative_to(folder)} ({type(exc).__name__})")
            continue
        if img.shape[0] < crop or img.shape[1] < crop:
            log(f"note: skipping {path} ({img.shape[1]}x{img.shape[0]} < crop {crop})")
            skipped += 1
            continue
        images.append(img)
    if unreadable:
        shown = ", ".join(unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
        raise ValueError(
            f"{len(unreadable)} file(s) under {folder} have an image suffix but do not decode: "
            f"{shown}; remove or replace them"
        )
    if not images:
        raise ValueError(f"no usable training image (>= {crop}x{crop}) under {folder}")
    note = f", skipped {skipped}" if skipped else ""
    log(f"loaded {len(images)} training images from {folder}{note}")
    return images


def sample_batch(
    images: Sequence[np.ndarray],
    rng: np.random.Generator,
    batch: int,
    crop: int,
    scale_min: float = 1.0,
    pool: Executor | None = None,
):
    """Random crops, randomly flipped left-right, as a ``(B, 3, crop, crop)`` tensor in [0, 1].

    With ``scale_min < 1`` each crop is cut as a square of side ``crop / s`` (``s`` uniform in
    ``[scale_min, 1]``, the side capped by the image) and resized to ``crop`` with an
    antialiased bicubic filter: downscaling removes the JPEG artefacts and the 4:2:0 chroma of
    the training photos and varies the scale of their content. ``scale_min == 1`` draws exactly
    the random numbers of plain crops, so runs without it replay bit for bit.

    All random numbers are drawn here, crop by crop in the same order, before any crop is cut;
    ``pool`` (a thread pool; PIL's resize releases the GIL) cuts them in parallel, with the
    same batch as without it.
    """
    return _cut_crops(_plan_crops(images, rng, batch, crop, scale_min), crop, pool)


_Plan = list[tuple[np.ndarray, int, int, int, bool]]


def _plan_crops(
    images: Sequence[np.ndarray],
    rng: np.random.Generator,
    batch: int,
    crop: int,
    scale_min: float,
) -> _Plan:
    """The random part of :func:`sample_batch`: (image, top, left, side, flip) per crop."""
    if not 0.0 < scale_min <= 1.0:
        raise ValueError(f"scale_min must be in (0, 1], got {scale_min}")
    plans = []
    for _ in range(batch):
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[:2]
        side = crop
        if scale_min < 1.0:
            side = min(h, w, round(crop / rng.uniform(scale_min, 1.0)))
        y0 = int(rng.integers(h - side + 1))
        x0 = int(rng.integers(w - side + 1))
        plans.append((img, y0, x0, side, bool(rng.random() < 0.5)))
    return plans


def _cut_crops(plans: _Plan, crop: int, pool: Executor | None):
    """The deterministic part of :func:`sample_batch`: cut, resize and flip each planned crop."""
    import torch

    out = np.empty((len(plans), crop, crop, 3), dtype=np.uint8)

    def cut(b: int) -> None:
        img, y0, x0, side, flip = plans[b]
        patch = img[y0 : y0 + side, x0 : x0 + side]
        if side != crop:
            patch = _resized(patch, crop)
        out[b] = patch[:, ::-1] if flip else patch

    if pool is None:
        for b in range(len(plans)):
            cut(b)
    else:
        list(pool.map(cut, range(len(plans))))
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


class CropSampler:
    """:func:`sample_batch` with fixed ``images``, ``batch``, ``crop`` and ``scale_min``, the
    crops cut by ``threads`` threads (0: the calling thread). A context manager: leaving it
    ends the threads. ``sampler(rng)`` is one batch, the same whatever ``threads``.

    With threads, the next batch is drawn from ``rng`` and cut while the caller trains on this
    one (a GPU step then waits for no crop): call it with one generator only, and
    :meth:`rewind` before saving that generator's state, which puts it back to where the
    batches handed out so far left it (the prefetched batch is drawn again after)."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        batch: int,
        crop: int,
        scale_min: float = 1.0,
        threads: int = 0,
    ) -> None:
        self.images, self.batch, self.crop, self.scale_min = images, batch, crop, scale_min
        self.pool = ThreadPoolExecutor(threads) if threads > 0 else None
        # one thread that runs the next batch's cutting on ``pool`` (a job waiting on its own
        # pool's workers could deadlock)
        self._feeder = ThreadPoolExecutor(1) if threads > 0 else None
        self._pending: Future | None = None
        self._rng: np.random.Generator | None = None
        self._state_before: dict | None = None

    def __call__(self, rng: np.random.Generator):
        if self._feeder is None:
            return sample_batch(self.images, rng, self.batch, self.crop, self.scale_min, self.pool)
        if self._pending is not None and rng is not self._rng:
            raise ValueError("a prefetching CropSampler serves one generator; rewind() first")
        x = (self._pending or self._submit(rng)).result()
        self._rng, self._state_before = rng, rng.bit_generator.state
        self._pending = self._submit(rng)
        return x

    def _submit(self, rng: np.random.Generator) -> Future:
        plans = _plan_crops(self.images, rng, self.batch, self.crop, self.scale_min)
        return self._feeder.submit(_cut_crops, plans, self.crop, self.pool)

    def rewind(self) -> None:
        """Drop the prefetched batch and put its random numbers back into the generator."""
        if self._pending is None:
            return
        self._pending.result()  # let the cutting finish before the arrays are dropped
        self._rng.bit_generator.state = self._state_before
        self._pending = self._rng = self._state_before = None

    def __enter__(self) -> CropSampler:
        return self

    def __exit__(self, *exc) -> None:
        self.rewind()
        for executor in (self._feeder, self.pool):
            if executor is not None:
                executor.shutdown()


def _resized(patch: np.ndarray, side: int) -> np.ndarray:
    """A square ``(S, S, 3)`` uint8 patch resized to ``(side, side, 3)`` (PIL bicubic, whose
    support widens with the reduction factor: antialiased)."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(patch))
    return np.asarray(im.resize((side, side), Image.Resampling.BICUBIC), dtype=np.uint8)


def load_kodak(kodak: str | Path, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Kodak images by stem (``kodim01``...); all ``kodim*.png`` when ``names`` is None."""
    folder = Path(kodak)
    if names is None:
        paths = sorted(folder.glob("kodim*.png"))
        if not paths:
            raise FileNotFoundError(f"no kodim*.png under {folder}")
    else:
        paths = [folder / (n if n.endswith(".png") else f"{n}.png") for n in names]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"Kodak images not found: {', '.join(missing)}")
    return {p.stem: read_rgb(p) for p in paths}
