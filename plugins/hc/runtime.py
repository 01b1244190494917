"""HC at inference: image <-> latents, the priors both sides compute, integer tables.

:class:`HCRuntime` loads an HC weights file (:mod:`plugins.hc.weights`) into
:class:`plugins.hc.nets.Transforms` built with :class:`plugins.learned.nets.GDN` (plain torch, no
``compressai`` import). Everything that decides how the decoder parses a stream goes through
the scale *indexes* of the three Gaussian priors, so, as the base model does for its ``h_s``
(:mod:`plugins.learned.model_io`), the hyper synthesis and the two conditional prior networks
run in **float64** on float64 copies of their weights, from exactly the values the decoder has:
the decoded ``z_hat``, then ``y4_hat = mu4 + n4`` and ``y3_hat = mu3 + n3`` with the decoded
integers ``n_i``. The analysis (encoder only) and the synthesis (pixels only) run in float32,
the synthesis in channels_last as the base model's (:mod:`plugins.learned.inference`).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from plugins.hc.nets import HCConfig, Transforms
from plugins.hc.weights import load_state, resolve
from plugins.learned.coding import table as table_coder
from plugins.learned.inference import inference_input, prepare_for_inference
from plugins.learned.model_io import (
    PAD_MULTIPLE,
    check_z_length,
    hyper_shape,
    min_z_bits_per_position,
)
from plugins.learned.nets import GDN
from plugins.learned.weights import ResolvedWeights


@dataclass
class Prior:
    """The Gaussian prior of one latent: ``(C, h, w)`` means and lower-bounded scales (float64)
    and the scale indexes (int16) into the shared scale table."""

    means: np.ndarray
    scales: np.ndarray
    indexes: np.ndarray


@dataclass
class Encoded:
    """Encoder side: the three latents (float64, ``(C, h, w)``), the coded ``z`` and the priors
    and integers of every latent, deepest first (``y4``, ``y3``, ``y2``)."""

    z_bytes: bytes
    priors: list[Prior]
    fine: list[np.ndarray]  # int64 round(y_i - mu_i), (C, h, w)


def count_parameters(state: dict) -> int:
    """Learned parameters in an HC state dict (transforms and the entropy bottleneck's density
    model; buffers and integer tables excluded)."""
    total = 0
    for key, value in state.items():
        leaf = key.rpartition(".")[2]
        transform = key.startswith("nets.") and leaf in ("weight", "bias", "beta", "gamma")
        density = key.startswith("entropy_bottleneck.") and (
            leaf == "quantiles" or leaf.startswith(("_matrix", "_bias", "_factor"))
        )
        if transform or density:
            total += value.numel()
    return int(total)


class HCRuntime:
    """The loaded HC model (see module doc), shared per weights file (:meth:`get`)."""

    _cache: dict[str, HCRuntime] = {}
    _lock = threading.Lock()

    def __init__(self, resolved: ResolvedWeights) -> None:
        self.resolved = resolved
        state, meta = load_state(resolved.path)
        self.meta = meta
        self.cfg = HCConfig(**{k: int(meta[k]) for k in ("N", "M", "C3", "C2", "P")})
        nets = Transforms(self.cfg, GDN)
        own = nets.state_dict()
        missing = [k for k in own if f"nets.{k}" not in state]
        if missing:
            raise ValueError(f"{resolved.path} lacks {len(missing)} entries, e.g. {missing[:3]}")
        nets.load_state_dict({k: state[f"nets.{k}"] for k in own})
        self.nets = nets.eval().requires_grad_(False)
        self.synthesis_nets = prepare_for_inference(nets)
        self.nets64 = copy.deepcopy(nets).double().eval()
        self.num_parameters = count_parameters(state)
        self.sha_prefix = bytes.fromhex(resolved.sha256[:8])

        def ints(key: str) -> np.ndarray:
            return state[key].numpy().astype(np.int64)

        self.z_cdf = ints("entropy_bottleneck._quantized_cdf")
        self.z_cdf_length = ints("entropy_bottleneck._cdf_length")
        self.z_offset = ints("entropy_bottleneck._offset")
        self.z_medians = state["entropy_bottleneck.quantiles"][:, 0, 1].numpy().copy()
        self.cdf = ints("gaussian_conditional._quantized_cdf")
        self.cdf_length = ints("gaussian_conditional._cdf_length")
        self.offset = ints("gaussian_conditional._offset")
        self.scale_table = state["gaussian_conditional.scale_table"].double().numpy().copy()
        bound = state.get("gaussian_conditional.lower_bound_scale.bound")
        self.scale_bound = float(bound) if bound is not None else float(self.scale_table[0])
        self.precision = 16  # bits of the integer CDFs
        self.min_z_bits_per_position = min_z_bits_per_position(self.z_cdf, self.z_cdf_length)

    @classmethod
    def get(cls, spec: str | None) -> HCRuntime:
        resolved = resolve(spec)
        with cls._lock:
            found = cls._cache.get(resolved.sha256)
        if found is None:
            found = cls(resolved)
            with cls._lock:
                found = cls._cache.setdefault(resolved.sha256, found)
        return found

    # -- shapes ------------------------------------------------------------------------------

    hyper_shape = staticmethod(hyper_shape)

    def check_z_length(self, z_len: int, height: int, width: int) -> None:
        """:func:`~plugins.learned.model_io.check_z_length` with HC's ``z`` tables."""
        check_z_length(z_len, height, width, self.min_z_bits_per_position)

    # -- priors (both sides, float64) ------------------------------------------------------

    def _prior(self, params: torch.Tensor) -> Prior:
        scales, means = params[0].chunk(2, 0)
        scales = np.maximum(scales.numpy(), self.scale_bound)
        indexes = np.searchsorted(self.scale_table[:-1], scales, side="left").astype(np.int16)
        return Prior(means=means.numpy().copy(), scales=scales, indexes=indexes)

    def decode_z(self, z_bytes: bytes, z_shape: tuple[int, int]) -> torch.Tensor:
        """``z_hat`` ``(1, N, h, w)`` float64: decoded integers plus the medians."""
        shape = (self.cfg.N, *z_shape)
        rows = np.broadcast_to(np.arange(self.cfg.N)[:, None, None], shape)
        symbols = table_coder.decode(z_bytes, rows, self.z_cdf, self.z_cdf_length, self.z_offset)
        z_hat = symbols.reshape(shape).astype(np.float32) + self.z_medians[:, None, None]
        return torch.from_numpy(z_hat.astype(np.float64))[None]

    def prior4(self, z_bytes: bytes, z_shape: tuple[int, int]) -> Prior:
        """The hyperprior of ``y4``."""
        with torch.no_grad():
            return self._prior(self.nets64.h_s(self.decode_z(z_bytes, z_shape)))

    def prior3(self, y4_hat: np.ndarray) -> tuple[torch.Tensor, Prior]:
        """``(features, prior of y3)`` given ``y4_hat`` ``(M, h, w)``."""
        with torch.no_grad():
            f3 = self.nets64.c3_features(torch.from_numpy(np.asarray(y4_hat, np.float64))[None])
            return f3, self._prior(self.nets64.c3_params(f3))

    def prior2(self, f3: torch.Tensor, y3_hat: np.ndarray) -> Prior:
        """The prior of ``y2`` given :meth:`prior3`'s features and ``y3_hat`` ``(C3, h, w)``."""
        y3 = torch.from_numpy(np.asarray(y3_hat, np.float64))[None]
        with torch.no_grad():
            f2 = self.nets64.c2_features(torch.cat([f3, y3], dim=1))
            return self._prior(self.nets64.c2_params(f2))

    # -- encoder -------------------------------------------------------------------------------

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 -> ``(1, 3, H', W')`` float32 in [0, 1], edge-padded to 64."""
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
        h, w = image.shape[:2]
        ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        x = x[None]
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

    def encode(self, image: np.ndarray) -> Encoded:
        """Analysis, ``z``, and the residual quantisation of ``y4``, ``y3``, ``y2`` in turn."""
        with torch.no_grad():
            y2, y3, y4 = self.nets.analysis(self.to_tensor(image))
            z = self.nets.h_a(y4)[0]
            medians = torch.from_numpy(self.z_medians)[:, None, None]
            symbols = torch.round(z - medians).to(torch.int64).numpy()
        z_shape = (int(z.shape[-2]), int(z.shape[-1]))
        rows = np.broadcast_to(np.arange(self.cfg.N)[:, None, None], symbols.shape)
        z_bytes = table_coder.encode(symbols, rows, self.z_cdf, self.z_cdf_length, self.z_offset)
        p4 = self.prior4(z_bytes, z_shape)
        n4 = np.rint(y4[0].double().numpy() - p4.means).astype(np.int64)
        f3, p3 = self.prior3(p4.means + n4)
        n3 = np.rint(y3[0].double().numpy() - p3.means).astype(np.int64)
        p2 = self.prior2(f3, p3.means + n3)
        n2 = np.rint(y2[0].double().numpy() - p2.means).astype(np.int64)
        return Encoded(z_bytes=z_bytes, priors=[p4, p3, p2], fine=[n4, n3, n2])

    # -- decoder -------------------------------------------------------------------------------

    def synthesise(
        self, y4_hat: np.ndarray, y3_hat: np.ndarray, y2_hat: np.ndarray, height: int, width: int
    ) -> np.ndarray:
        """``(height, width, 3)`` uint8 from the three latents (float32 synthesis in
        channels_last, :mod:`plugins.learned.inference`)."""
        t = inference_input
        with torch.no_grad():
            x_hat = self.synthesis_nets.synthesis(t(y2_hat), t(y3_hat), t(y4_hat))
            x_hat = x_hat[0, :, :height, :width]
            x_hat = x_hat.clamp_(0, 1).mul_(255.0).round_().to(torch.uint8)
        return np.ascontiguousarray(x_hat.permute(1, 2, 0).numpy())
