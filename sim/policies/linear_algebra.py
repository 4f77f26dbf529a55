"""Small linear-algebra helpers shared by the linear policies."""
from __future__ import annotations

import numpy as np
from scipy import linalg


def cholesky(matrix: np.ndarray, what: str) -> np.ndarray:
    """Lower Cholesky factor, or a clear error when the matrix is not positive definite."""
    try:
        return linalg.cholesky(matrix, lower=True)
    except linalg.LinAlgError:
        eig = np.linalg.eigvalsh(matrix)
        raise FloatingPointError(
            f"{what} is not positive definite (smallest eigenvalue {eig.min():.3g}, condition "
            f"number {abs(eig.max() / eig.min()) if eig.min() else float('inf'):.3g}); increase "
            f"the policy's l2 regularisation") from None
