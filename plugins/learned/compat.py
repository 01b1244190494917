"""Compatibility shim that lets compressai import next to a mismatched torchvision.

compressai 1.2.8 imports torchvision (``compressai/registry/transforms.py``). PyPI's torchvision
0.28.0 is built for CUDA torch; next to the CPU torch 2.13.0 its C++ extension (``_C.so``) does
not load, and torchvision's import then fails in ``_meta_registrations.py`` with
``RuntimeError: operator torchvision::nms does not exist``: it registers fake kernels for the
operators ``nms`` and ``qnms``, whose schemas only the missing extension would have defined.

The shim defines those two schemas (no kernels: calling them would still fail, and neither bench
nor compressai's image codecs use them) so that the import goes through. It is careful not to
interfere with a torchvision that works:

1. if compressai (or torchvision) is already imported, nothing is done;
2. if ``torchvision::nms`` is already a known operator, nothing is done;
3. otherwise the shim first loads torchvision's own extension library exactly as torchvision
   would (``torch.ops.load_library`` on ``torchvision/_C.*``) without importing the torchvision
   package; a working install thereby defines the real operators and the shim stops there;
4. only if the operator is still missing are the schemas defined, in a
   ``torch.library.Library("torchvision", "DEF")`` kept alive in :data:`_TORCHVISION_LIB` (a
   dropped Library object unregisters what it defined).

Nothing in this module imports torchvision itself, so no half-imported torchvision is ever left
in ``sys.modules``; leftovers of an earlier failed ``import torchvision`` elsewhere are removed
before compressai is imported.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

#: The Library that owns the shim's operator schemas; must stay referenced for their lifetime.
_TORCHVISION_LIB = None
_LOCK = threading.Lock()


def _has_op(name: str) -> bool:
    import torch

    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _try_load_torchvision_extension() -> None:
    """Load ``torchvision/_C.*`` the way torchvision does, without importing the package."""
    import torch

    try:
        spec = importlib.util.find_spec("torchvision")
    except (ImportError, ValueError):
        return
    if spec is None or not spec.submodule_search_locations:
        return
    for folder in spec.submodule_search_locations:
        for candidate in sorted(Path(folder).glob("_C.*")):
            if candidate.suffix not in (".so", ".pyd", ".dylib"):
                continue
            # Failing to load is the broken-extension case this shim exists for.
            with contextlib.suppress(OSError, ImportError, RuntimeError):
                torch.ops.load_library(str(candidate))
            return


def apply() -> bool:
    """Define the missing ``torchvision::nms``/``qnms`` schemas if needed.

    Returns ``True`` when the shim defined them, ``False`` when nothing had to be done.
    Idempotent and thread-safe.
    """
    global _TORCHVISION_LIB
    with _LOCK:
        if _TORCHVISION_LIB is not None:
            return True
        if "torchvision" in sys.modules or "compressai" in sys.modules:
            return False  # already imported successfully by someone else
        import torch

        if _has_op("nms") and _has_op("qnms"):
            return False
        _try_load_torchvision_extension()
        missing = [s for s in _SCHEMAS if not _has_op(s.split("(", 1)[0])]
        if not missing:
            return False
        lib = torch.library.Library("torchvision", "DEF")
        for schema in missing:
            lib.define(schema)
        _TORCHVISION_LIB = lib
        # Drop leftovers of an earlier failed ``import torchvision`` (its submodules that did
        # import stay in sys.modules) so that the next import starts clean.
        for name in [m for m in sys.modules if m.startswith("torchvision.")]:
            del sys.modules[name]
        return True


def import_compressai() -> ModuleType:
    """Apply the shim, then import and return the ``compressai`` module."""
    apply()
    compressai = importlib.import_module("compressai")
    importlib.import_module("compressai.models")
    return compressai
