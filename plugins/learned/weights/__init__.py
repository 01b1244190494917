"""The learned codecs' weights: specs resolved to verified files (:mod:`.specs`), the exported
file format (:mod:`.format`) and safe, cached loading (:mod:`.loading`).

This folder also holds the shipped weights (``NAME.safetensors`` and its ``NAME.json``
sidecar): :data:`BUNDLED_DIR`. Importing the package imports neither torch nor compressai.
"""

from plugins.learned.weights.format import WEIGHTS_FORMAT, load_weights, sidecar_path
from plugins.learned.weights.loading import load_model, load_state
from plugins.learned.weights.specs import (
    BUNDLED_DIR,
    BUNDLED_NAME,
    DEFAULT_WEIGHTS,
    TRAIN_FIX,
    WEIGHTS_PATH_ENV,
    ResolvedWeights,
    WeightsError,
    bundled_search_path,
    check_default_weights,
    check_dependencies,
    find_bundled,
    resolve,
    resolve_zoo,
)

__all__ = [
    "BUNDLED_DIR",
    "BUNDLED_NAME",
    "DEFAULT_WEIGHTS",
    "TRAIN_FIX",
    "WEIGHTS_FORMAT",
    "WEIGHTS_PATH_ENV",
    "ResolvedWeights",
    "WeightsError",
    "bundled_search_path",
    "check_default_weights",
    "check_dependencies",
    "find_bundled",
    "load_model",
    "load_state",
    "load_weights",
    "resolve",
    "resolve_zoo",
    "sidecar_path",
]
