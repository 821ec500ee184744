"""The paper's concatenation baseline for fusing modalities (§4.3, Table 5 "Concat"), pure numpy."""

import numpy as np


def pca(matrix, dim):
    """Projection of ``matrix`` on its first ``dim`` principal components.

    The SVD runs in float64: LAPACK's float32 path was about 4x slower on the project's CPUs.
    """
    centred = np.asarray(matrix, dtype=np.float64)
    centred = centred - centred.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:dim].T


def concat_embeddings(semantic, collaborative):
    """``[PCA(E_S -> d_c) || E_C]`` as float32 ``[n, 2 d_c]``: PCA first, so that the two halves
    have the same width, as the paper does before concatenating."""
    collaborative = np.asarray(collaborative, dtype=np.float32)
    if semantic.ndim != 2 or collaborative.ndim != 2 or semantic.shape[0] != collaborative.shape[0]:
        raise ValueError(f"need [n, d] arrays with equal n, got {semantic.shape} and {collaborative.shape}")
    return np.concatenate([pca(semantic, collaborative.shape[1]), collaborative], axis=1).astype(np.float32)
