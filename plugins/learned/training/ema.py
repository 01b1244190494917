"""An exponential moving average of a model's weights (Polyak averaging, ``--ema-decay``).

With a batch of 8 small crops and a learning rate near 1e-4, the weights after any one step sit
somewhere in a cloud around the optimum, and the Kodak figure of consecutive checkpoints
wanders by a few tenths of a dB. The average of recent weights sits nearer the centre of that
cloud. A trainer keeps it beside the live weights
(:class:`~plugins.learned.training.rd_step.RDStep`), evaluates both, and exports the average
(:func:`exported_state`).

After every optimiser step each floating-point parameter's average moves towards it,
``average = decay * average + (1 - decay) * parameter`` (float32, on the parameter's device):
a window of about ``1 / (1 - decay)`` iterations. The average starts at the weights it is
enabled on. Buffers (entropy-coder tables, scale table) are not averaged; a state dict of the
average takes them from the live model. In a checkpoint the average is
``{"decay", "since", "weights"}``: its decay, the iteration it started at and a full model
state dict.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

#: Checkpoint key of the average (see module doc).
CHECKPOINT_KEY = "ema"


class WeightAverage:
    """The moving average of ``model``'s floating-point parameters; ``0 < decay < 1``.

    ``since`` is the iteration the average started at (kept for the record). ``saved``, the
    :meth:`state` of a checkpoint, continues that average instead of starting a new one; its
    ``decay`` is replaced by the one given (a resumed run may change it).
    """

    def __init__(
        self, model, decay: float, since: int, saved: dict[str, Any] | None = None
    ) -> None:
        import torch

        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must be in (0, 1), got {decay}")
        self.model = model
        self.decay = decay
        self.since = since
        self._params = [(name, p) for name, p in model.named_parameters() if p.is_floating_point()]
        with torch.no_grad():
            if saved is None:
                self.average = [p.detach().float().clone() for _, p in self._params]
            else:
                weights = saved["weights"]
                missing = [name for name, _ in self._params if name not in weights]
                if missing:
                    raise KeyError(f"the saved weight average lacks {', '.join(missing[:3])}")
                self.average = [
                    weights[name].to(device=p.device, dtype=torch.float32).clone()
                    for name, p in self._params
                ]
                self.since = int(saved.get("since", since))

    def update(self) -> None:
        """Move the average one step towards the live parameters (call after each step)."""
        import torch

        with torch.no_grad():
            live = [p.detach().float() for _, p in self._params]
            torch._foreach_lerp_(self.average, live, 1.0 - self.decay)

    def weights(self) -> dict[str, Any]:
        """A full state dict of the average (CPU, contiguous): the averaged parameters, the
        live model's buffers."""
        averaged = {name: a for (name, _), a in zip(self._params, self.average, strict=True)}
        return {
            k: averaged.get(k, v).detach().cpu().contiguous().clone()
            for k, v in self.model.state_dict().items()
        }

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps under :data:`CHECKPOINT_KEY`."""
        return {"decay": self.decay, "since": self.since, "weights": self.weights()}

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Within the block the model's parameters hold the average (e.g. to evaluate it);
        the live values are put back on exit."""
        import torch

        with torch.no_grad():
            live = [p.detach().clone() for _, p in self._params]
            for (_, p), a in zip(self._params, self.average, strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, p), saved in zip(self._params, live, strict=True):
                    p.copy_(saved)

    def evaluated(self, evaluate: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``evaluate()`` run with the average swapped in, as an ``eval`` record's
        ``average``: ``{"decay": decay, **evaluate()}``."""
        with self.swapped_in():
            return {"decay": self.decay, **evaluate()}


def exported_state(state: dict[str, Any], live: bool = False) -> tuple[dict[str, Any], dict]:
    """The weights an export of checkpoint ``state`` ships, and their description.

    The average when the checkpoint holds one and ``live`` is false, otherwise the live
    weights (``state["model"]``). The description, for the sidecar, is
    ``{"weights": "average", "decay", "since_iteration"}`` or ``{"weights": "live"}``.
    """
    average = state.get(CHECKPOINT_KEY)
    if average is None or live:
        return state["model"], {"weights": "live"}
    return average["weights"], {
        "weights": "average",
        "decay": float(average["decay"]),
        "since_iteration": int(average["since"]),
    }
