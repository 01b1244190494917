"""The torchvision/compressai import shim, each case in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_import_compressai_through_shim_builds_model():
    out = _run(
        """
        import sys
        assert "torchvision" not in sys.modules and "compressai" not in sys.modules
        from plugins.learned.compat import apply, import_compressai
        compressai = import_compressai()
        assert "torchvision" in sys.modules
        assert import_compressai() is compressai  # idempotent
        apply()
        model = compressai.models.MeanScaleHyperprior(N=8, M=8)
        print(compressai.__version__, sum(p.numel() for p in model.parameters()))
        """
    )
    version, params = out.split()
    assert version.startswith("1.")
    assert int(params) > 0


def test_shim_defines_nothing_when_operators_exist():
    # Simulates a working torchvision: the operators are already known, so the shim must not
    # define them again (a second definition would raise).
    out = _run(
        """
        import torch
        keep = torch.library.Library("torchvision", "FRAGMENT")
        keep.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        keep.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        from plugins.learned import compat
        print(compat.apply(), compat._TORCHVISION_LIB is None)
        compressai = compat.import_compressai()
        compressai.models.MeanScaleHyperprior(N=8, M=8)
        """
    )
    assert out.split() == ["False", "True"]
