"""One rate-distortion training iteration of a learned compression model, shared by the trainers
(``bench train msh`` and ``bench train hc``).

The loss terms are the model's business: a trainer hands :class:`RDStep` a function of a prepared
batch that returns float32 scalar tensors, ``loss`` (what is minimised, e.g.
``lmbda * 255**2 * MSE + bpp``) and ``mse`` and ``bpp`` plus whatever else the model logs (HC:
the rate of each latent). The optimisation is the same for every CompressAI model: Adam on the
main parameters with the schedule's learning rate and the gradient norm clipped, and a second
Adam on the entropy bottleneck's quantiles that minimises ``model.aux_loss()``; optionally a
moving average of the weights (:mod:`plugins.learned.training.ema`) updated after each step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from plugins.learned.training.ema import CHECKPOINT_KEY, WeightAverage
from plugins.learned.training.run import Run
from plugins.learned.training.schedule import CosineSchedule


def split_parameters(model) -> tuple[list[Any], list[Any]]:
    """``(main, aux)``: the trainable parameters Adam updates, and the entropy bottleneck's
    quantiles (``model.aux_loss()``'s own optimiser), each in ``named_parameters`` order."""
    main, aux = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (aux if name.endswith(".quantiles") else main).append(p)
    return main, aux


class RDStep:
    """The optimisers of ``model`` and its training iteration (:meth:`__call__`).

    ``terms(x)`` gives the loss terms of a batch (see module doc); ``schedule(iteration)`` the
    learning rate of the iteration that follows ``iteration`` completed ones; ``lr`` is Adam's
    initial rate (the schedule sets it before every step), ``aux_lr`` the quantiles' rate,
    ``clip`` the gradient-norm bound of the main parameters (0: none). ``ema_decay`` > 0 keeps
    :attr:`average`, the moving average of the weights, starting at iteration ``iteration``
    (a checkpoint's average replaces it in :meth:`restore`).
    """

    def __init__(
        self,
        model,
        terms: Callable[[Any], dict[str, Any]],
        schedule: Callable[[int], float],
        *,
        lr: float,
        aux_lr: float,
        clip: float,
        ema_decay: float = 0.0,
        iteration: int = 0,
    ) -> None:
        import torch

        self.model = model
        self.terms = terms
        self.schedule = schedule
        self.clip = clip
        self.main_params, aux_params = split_parameters(model)
        self.optimizer = torch.optim.Adam(self.main_params, lr=lr)
        self.aux_optimizer = torch.optim.Adam(aux_params, lr=aux_lr)
        #: The moving average of the weights, or ``None`` (``ema_decay`` 0).
        self.average = WeightAverage(model, ema_decay, iteration) if ema_decay > 0 else None
        #: The learning rate of the last step.
        self.lr = lr
        self._sums: dict[str, float] = {}
        self._count = 0
        self._seconds = 0.0

    @classmethod
    def of(cls, model, terms: Callable[[Any], dict[str, Any]], cfg, iteration: int) -> RDStep:
        """The step a :class:`~plugins.learned.training.msh_config.TrainConfig` (or subclass)
        defines: its cosine schedule, ``lr``, ``aux_lr``, ``clip`` and ``ema_decay``, at the
        run's current ``iteration``."""
        return cls(
            model,
            terms,
            CosineSchedule.of(cfg),
            lr=cfg.lr,
            aux_lr=cfg.aux_lr,
            clip=cfg.clip,
            ema_decay=cfg.ema_decay,
            iteration=iteration,
        )

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the training: ``model`` (the state dict on the CPU,
        contiguous), ``optimizer``, ``aux_optimizer`` and, when kept, the weight average
        (``ema``, :meth:`WeightAverage.state`)."""
        state = {
            "model": {k: v.cpu().contiguous() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict(),
        }
        if self.average is not None:
            state[CHECKPOINT_KEY] = self.average.state()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Restore both optimisers, and the weight average when this step keeps one and the
        checkpoint has one, from a checkpoint holding :meth:`state_dict`'s keys (the model's
        weights are loaded by the trainer, before the model is prepared). A checkpoint without
        an average leaves the new one starting at the loaded weights."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.aux_optimizer.load_state_dict(state["aux_optimizer"])
        if self.average is not None and state.get(CHECKPOINT_KEY) is not None:
            self.average = WeightAverage(
                self.model, self.average.decay, self.average.since, state[CHECKPOINT_KEY]
            )

    def __call__(self, run: Run, batch: Callable[[], Any]) -> dict[str, float]:
        """One iteration: draw ``batch()`` (a prepared ``(B, 3, H, W)`` tensor), take the
        optimisers' steps, count the iteration and its seconds in ``run`` (:meth:`Run.advance`)
        and in the means of :meth:`record`. Returns the terms and ``aux`` as floats.

        Raises ``FloatingPointError`` on a non-finite term (before counting the iteration).
        """
        import torch

        t0 = time.perf_counter()
        x = batch()
        self.optimizer.zero_grad(set_to_none=True)
        self.aux_optimizer.zero_grad(set_to_none=True)
        terms = self.terms(x)
        terms["loss"].backward()
        self.lr = self.schedule(run.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.main_params, self.clip)
        self.optimizer.step()
        aux_loss = self.model.aux_loss()
        aux_loss.backward()
        self.aux_optimizer.step()
        if self.average is not None:
            self.average.update()
        values = {k: float(v.detach()) for k, v in terms.items()}  # synchronises the device
        values["aux"] = float(aux_loss.detach())
        seconds = time.perf_counter() - t0
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(
                f"non-finite loss at iteration {run.iteration + 1}: {values}; "
                "the last checkpoint is intact"
            )
        run.advance(seconds)
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1
        self._seconds += seconds
        return values

    def record(self, run: Run, **extra: Any) -> dict[str, Any]:
        """The ``train`` log record of the iterations since the last one: the mean of each term,
        ``psnr_est`` (dB, from the mean MSE of images in [0, 1]), mean ``seconds`` per
        iteration, the last ``lr``, ``train_seconds`` and ``time``, then ``extra``. Starts the
        next means."""
        n = max(1, self._count)
        means = {k: v / n for k, v in self._sums.items()}
        record = {
            "type": "train",
            "iteration": run.iteration,
            **means,
            "psnr_est": 10 * math.log10(1.0 / max(means.get("mse", 0.0), 1e-12)),
            "seconds": self._seconds / n,
            "lr": self.lr,
            "train_seconds": run.train_seconds,
            "time": time.time(),
            **extra,
        }
        self._sums, self._count, self._seconds = {}, 0, 0.0
        return record
