"""RecBole models added by this package, by name (run_unger.py looks models up here first)."""

from unger_recbole import compat  # noqa: F401  (numpy/pandas shims before RecBole)
from unger_recbole.model.stage1 import UNGERStage1
from unger_recbole.model.unger import UNGER

MODELS = {"UNGER": UNGER, "UNGERStage1": UNGERStage1}
