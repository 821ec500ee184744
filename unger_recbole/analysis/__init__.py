"""Result analyses: paper-style tables and figures (tables.py), modality similarity and t-SNE (modality.py)."""
