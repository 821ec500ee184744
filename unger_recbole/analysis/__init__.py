"""Diagnostics and reports of UNGER runs: modality similarity and t-SNE (paper §4.3, `modality.py`),
comparison tables and figures (`tables.py`)."""
