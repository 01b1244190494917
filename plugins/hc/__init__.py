"""HC: the hierarchical compression model of Ge, Wang, Shi and Gao, "Hierarchical Image
Compression Framework" (ICLR 2021 workshop submission), trained by this project, coded
progressively by depth. Built-in plugin: codec ``hc`` (:mod:`plugins.hc.codec`) and
``bench train hc`` (:mod:`plugins.hc.train`). Importing this module stays light.

Sources. The paper's text could not be found here (the reference search returned other
papers); this implementation works from the summary in the project's issue 14: the analysis
transform emits latents ``y_1..y_n`` taken at increasing depth; the deepest gets the
hyperprior of Balle et al. 2018; each shallower latent is coded with a Gaussian
``N(mu_i, sigma_i)`` conditioned on the deeper ones (``p(y) = p(y_n) prod p(y_i | y_>i)``);
residual quantisation ``round(y - mu) + mu``; a Balle 2018 backbone with GDN; the channels of
``y_3`` and ``y_2`` are 16 and 4; HC_N128 sends only ``y_4`` at low rates, ``y_3 + y_4`` up to
about 1 bpp and all three above. Everything else below is our choice.

Architecture (N=128, M=192; :mod:`plugins.hc.nets`)
    * Which latents: ``n = 4``, and ``y_1`` is not transmitted (the paper's rate regimes name
      only ``y_2``, ``y_3``, ``y_4``). ``y_i`` is taken after analysis stage ``i`` (stride 2
      each): ``y_2`` at H/4 (4 channels), ``y_3`` at H/8 (16 channels), ``y_4`` at H/16 (M).
    * Analysis: MeanScaleHyperprior's ``g_a`` (conv5x5/2 + GDN, three times, then conv5x5/2 to
      M), with *taps*: ``y_2 = conv3x3(a_2)`` after the second GDN stage, ``y_3 =
      conv3x3(a_3)`` after the third; the main path continues from the untapped features.
    * Hyperprior of ``y_4``: MeanScaleHyperprior's ``h_a``/``h_s`` (means and scales).
    * Conditional priors (our design; the paper only says "conditioned on the deeper ones"):
      ``f_3 = LeakyReLU(deconv5x5/2(y4_hat))`` with P=64 channels, ``(sigma_3, mu_3) =
      conv3x3(f_3)``; ``f_2 = LeakyReLU(deconv5x5/2(cat(f_3, y3_hat)))``, ``(sigma_2, mu_2) =
      conv3x3(f_2)``: ``y_2``'s prior sees ``y_4`` through ``f_3`` and ``y_3`` directly.
    * LC module (latent combination in the synthesis; the paper's is not specified in the
      summary): MeanScaleHyperprior's ``g_s`` with each shallower latent added at its own
      resolution through a 3x3 convolution: after the first IGDN stage (H/8)
      ``s += conv3x3(y3_hat)``, after the second (H/4) ``s += conv3x3(y2_hat)``.
    * Training: CompressAI's additive-noise proxy for every latent, one ``GaussianConditional``
      (its 64-entry scale table) shared by the three latents, loss ``lmbda * 255^2 * MSE +
      bpp`` summed over ``y_4``, ``y_3``, ``y_2`` and ``z``; the base relay's data, crops,
      batch, schedule and lambda (:mod:`plugins.hc.train`).

Progressive stream (:mod:`plugins.hc.codec`)
    Header and ``z``, then ``y_4``, ``y_3``, ``y_2``; each latent's residual integers through
    the shared nested-interval coder (PLONQ's dead-zone levels, elements by decreasing prior
    scale, self-delimiting chunks), so any prefix decodes; a latent not (fully) received
    decodes to its conditional mean given the deeper ones. ``hc[nested=false]`` is progression
    by depth only (each element's integer at once); ``hc`` (nested, 4 levels) refines inside
    each latent too.
"""

from __future__ import annotations

from typing import Literal

from bench import CodecSpec, ProgressiveCodec, TrainerSpec, hookimpl
from plugins.hc.weights import DEFAULT_WEIGHTS, check_default_weights
from plugins.learned.deferred import codec_factory, deferred


@codec_factory("plugins.hc.codec:HCCodec")
def make_hc(
    *,
    weights: str = DEFAULT_WEIGHTS,
    nested: bool = True,
    levels: int = 4,
    chunk_bits: int = 1024,
    reconstruction: Literal["mean", "midpoint"] = "mean",
    memo: bool = False,
) -> ProgressiveCodec:
    """HC, progressive by depth.

    Args:
        weights: HC weights: a shipped name (bundled:NAME) or a .safetensors path.
        nested: refine inside each latent by nested levels (false: by depth only).
        levels: nested dead-zone levels per latent when nested (steps 2**(levels-1) .. 1), 1..12.
        chunk_bits: bits per range-coded chunk, a multiple of 64.
        reconstruction: where a latent is put in its interval: the prior's mean or the midpoint.
        memo: keep the last decoded hyper path and image for the next, longer prefix.
    """


@hookimpl
def register_codecs(register):
    register(
        CodecSpec(
            name="hc",
            factory=make_hc,
            summary=(
                "HC (Ge et al. 2021): hierarchical latents (y4 hyperprior, y3|y4, y2|y3,y4) with "
                "residual quantization, trained here; stream by depth with nested refinement"
            ),
            check=check_default_weights,
        )
    )


@hookimpl
def register_trainers(register):
    register(
        TrainerSpec(
            name="hc",
            main=deferred("plugins.hc.train:main"),
            summary=(
                "HC (hierarchical latents); default --out: the relay dir "
                "$BENCH_TRAIN_DIR/hc-n128-m192-l1800, continued when it holds a checkpoint"
            ),
        )
    )
