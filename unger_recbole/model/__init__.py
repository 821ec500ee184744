"""RecBole models added by this package, by name (run_unger.py looks models up here first)."""

MODELS = {}
