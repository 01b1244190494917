"""Reconstructions for the progressive viewer of ``report.html``, saved by the measuring worker.

For the run's viewer images (``--viewer-images``) the worker saves, from the very decode that
gave a row its metrics, the 8-bit RGB reconstruction as lossless WebP under the run directory:

* ``viewer/<codec>/<image stem>/<stream sha256[:16]>.webp``: one file per distinct decoded
  stream (targets whose prefixes are identical share it); the row holds its path relative to the
  run directory (``recon_file``) and ``recon_sha256``, the sha256 of the reconstruction's pixels
  (``H x W x 3`` uint8, C order), which reading the file back must reproduce;
* ``viewer/original/<image stem>.webp``: the original as the metrics saw it.

Files are written to a temporary name and renamed, so a killed run never leaves half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

VIEWER = "viewer"
SUFFIX = ".webp"
#: Lossless WebP, effort 2 of 6: on the default run's 116 Kodak files 51.4 MB in 11 s, where
#: effort 0 takes 55.2 MB in 3 s and effort 3 50.5 MB in 29 s (PNG: about 30 % larger).
WEBP_OPTIONS = {"lossless": True, "quality": 0, "method": 2}


def safe_filename(label: str) -> str:
    """A file name for a codec label such as ``jpeg2000[levels=3]``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "codec"


def pixels_sha256(image: np.ndarray) -> str:
    """sha256 of an ``(H, W, 3)`` uint8 image's pixel bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


def original_file(image: str) -> str:
    """Path, relative to the run directory, of ``image``'s original (``image``: its file name)."""
    return f"{VIEWER}/original/{Path(image).stem}{SUFFIX}"


def select_viewer_images(spec: Sequence[str], images: Sequence[str]) -> list[str]:
    """The run images (file names, in run order) whose reconstructions are saved.

    ``spec``: empty or ``["none"]`` for none, ``["auto"]`` for the run's first and last image,
    ``["all"]``, or image names (file name or stem). ``ValueError`` names one not in the run.
    """
    wanted = [s.strip() for s in spec if s.strip()]
    if not wanted or wanted == ["none"]:
        return []
    if wanted == ["all"]:
        return list(images)
    if wanted == ["auto"]:
        return list(dict.fromkeys([images[0], images[-1]])) if images else []
    by_name = {name: name for name in images} | {Path(name).stem: name for name in images}
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise ValueError(
            f"--viewer-images names images not in this run: {', '.join(unknown)} "
            "(use image names, 'auto', 'all' or 'none')"
        )
    chosen = {by_name[w] for w in wanted}
    return [name for name in images if name in chosen]


def _write_webp(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(image, "RGB").save(tmp, format="WEBP", **WEBP_OPTIONS)
    os.replace(tmp, path)


class ReconstructionSaver:
    """Saves one (codec, image) unit's reconstructions under ``run_dir``; see the module doc."""

    def __init__(self, run_dir: str | Path, label: str, image: str) -> None:
        self.run_dir = Path(run_dir)
        self.folder = f"{VIEWER}/{safe_filename(label)}/{Path(image).stem}"
        self.image = image

    def save_original(self, original: np.ndarray) -> None:
        """Write the original once (another worker may already have: then nothing is done)."""
        path = self.run_dir / original_file(self.image)
        if not path.exists():
            _write_webp(path, original)

    def __call__(self, reconstruction: np.ndarray, stream: bytes) -> dict[str, str]:
        """Save the decode of ``stream``; return the row fields ``recon_file``, ``recon_sha256``."""
        name = f"{self.folder}/{hashlib.sha256(stream).hexdigest()[:16]}{SUFFIX}"
        _write_webp(self.run_dir / name, reconstruction)
        return {"recon_file": name, "recon_sha256": pixels_sha256(reconstruction)}
