"""Test support for the learned codecs: which weights file the tests use.

Tests locate weights through the registry's bundled name (:data:`weights.DEFAULT_WEIGHTS`), so
they run with the shipped file. While no file is shipped (development), they fall back to a
snapshot named by ``$BENCH_TEST_WEIGHTS`` or to ``checkpoints/dev.safetensors`` in the
repository (exported from a running ``bench train``), given as a user path. They skip, with
the reason, only when none of these exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from plugins.learned.weights import BUNDLED_NAME, DEFAULT_WEIGHTS, find_bundled

REPO = Path(__file__).resolve().parents[2]
DEV_WEIGHTS = REPO / "checkpoints" / "dev.safetensors"


def test_weights_spec() -> str | None:
    """The weights spec tests should use, or ``None`` when no weights file exists at all."""
    if find_bundled(BUNDLED_NAME) is not None:
        return DEFAULT_WEIGHTS
    env = os.environ.get("BENCH_TEST_WEIGHTS")
    if env and Path(env).is_file():
        return str(Path(env).resolve())
    if DEV_WEIGHTS.is_file():
        return str(DEV_WEIGHTS)
    return None


test_weights_spec.__test__ = False  # not a pytest test

SKIP_REASON = (
    f"no weights: neither the bundled {BUNDLED_NAME}.safetensors (plugins/learned/weights/) "
    "nor $BENCH_TEST_WEIGHTS nor checkpoints/dev.safetensors exists; export one with "
    "`bench train-export`"
)


def dependencies_missing() -> str | None:
    """Why the learned codecs cannot run here, or ``None``."""
    from bench.codec import CodecUnavailable
    from plugins.learned.weights import check_dependencies

    try:
        check_dependencies()
    except CodecUnavailable as exc:
        return str(exc)
    return None


_FRESH_DECODE = r"""
import importlib, json, sys
job = json.loads(open(sys.argv[1]).read())
module, name = job["codec"].split(":")
codec = getattr(importlib.import_module(module), name)(weights=job["weights"])
data = bytes.fromhex(job["data"])
print(json.dumps([codec.decode(data[:c]).tolist() for c in job["cuts"]]))
"""


def assert_fresh_process_decodes_alike(codec, codec_path: str, weights: str, image, tmp_path):
    """Encode ``image``, decode four prefixes (header, middle, all but one byte, all) in a new
    Python process built from ``codec_path`` (``"module:Class"``), and require identical pixels.
    """
    import json
    import subprocess
    import sys

    import numpy as np

    data = codec.encode(image)
    header = codec.decode_full(data).header_bytes
    cuts = [header, (header + len(data)) // 2, len(data) - 1, len(data)]
    job = Path(tmp_path) / "job.json"
    job.write_text(
        json.dumps({"codec": codec_path, "weights": weights, "data": data.hex(), "cuts": cuts})
    )
    from bench.conformance import fresh_process_environment

    done = subprocess.run(
        [sys.executable, "-c", _FRESH_DECODE, str(job)],
        capture_output=True, text=True, cwd=REPO, timeout=600, env=fresh_process_environment(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for cut, pixels in zip(cuts, json.loads(done.stdout), strict=True):
        assert np.array_equal(np.array(pixels, dtype=np.uint8), codec.decode(data[:cut]))
