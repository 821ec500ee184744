"""Trainer for UNGER stage II: RecBole's Trainer (with our checkpoint fix) plus linear LR warm-up."""

from torch.optim.lr_scheduler import LambdaLR

from unger_recbole.compat import CheckpointTrainer


class WarmupTrainer(CheckpointTrainer):
    """Linear learning-rate warm-up over ``warmup_steps`` optimizer steps, then constant (paper §4.1:
    "Adam ... learning rate of 0.001 and apply a warmup strategy")."""

    def _build_optimizer(self, **kwargs):
        optimizer = super()._build_optimizer(**kwargs)
        warmup_steps = max(1, self.config["warmup_steps"])
        scheduler = LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps))
        optimizer.register_step_post_hook(lambda *_: scheduler.step())
        return optimizer
