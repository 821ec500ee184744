"""Trainers: RecBole's, with our checkpoint fix, a per-epoch learning curve, and UNGER's warm-up."""

import time

from unger_recbole.compat import CheckpointTrainer, CheckpointTrainerMixin  # first: shims before RecBole

from torch.optim.lr_scheduler import LambdaLR
from recbole.utils import get_trainer


class LearningCurveMixin:
    """Keeps ``learning_curve``: one entry per trained epoch with its training loss and seconds,
    plus the full validation result and seconds where the epoch was evaluated. RecBole only logs
    these; the results JSON keeps them so training length can be judged after the run. A callable
    ``on_curve_update(curve)``, when set, gets the curve after every change, so a run that is
    stopped (time limit, pre-emption) still leaves its curve behind."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.learning_curve = []
        self.on_curve_update = None

    def _curve_updated(self):
        if self.on_curve_update is not None:
            self.on_curve_update(self.learning_curve)

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        tic = time.time()
        loss = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
        total = sum(loss) if isinstance(loss, tuple) else loss
        self.learning_curve.append({"epoch": epoch_idx + 1, "train_loss": float(total),
                                    "train_seconds": round(time.time() - tic, 2)})
        self._curve_updated()
        return loss

    def _valid_epoch(self, valid_data, *args, **kwargs):
        tic = time.time()
        score, result = super()._valid_epoch(valid_data, *args, **kwargs)
        if self.learning_curve:
            self.learning_curve[-1].update(valid={k: float(v) for k, v in result.items()},
                                           valid_seconds=round(time.time() - tic, 2))
            self._curve_updated()
        return score, result


def trainer_class_for(model_type, model_name):
    """The trainer RecBole would pick for ``model_name``, with our checkpoints and learning curve."""
    base = get_trainer(model_type, model_name)
    return type(f"Curve{base.__name__}", (LearningCurveMixin, CheckpointTrainerMixin, base), {})


class WarmupTrainer(LearningCurveMixin, CheckpointTrainer):
    """Linear learning-rate warm-up over ``warmup_steps`` optimizer steps, then constant (paper §4.1:
    "Adam ... learning rate of 0.001 and apply a warmup strategy")."""

    def _build_optimizer(self, **kwargs):
        optimizer = super()._build_optimizer(**kwargs)
        warmup_steps = max(1, self.config["warmup_steps"])
        scheduler = LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps))
        optimizer.register_step_post_hook(lambda *_: scheduler.step())
        return optimizer
