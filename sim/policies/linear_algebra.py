"""Small linear-algebra helpers shared by the linear policies."""
from __future__ import annotations

import numpy as np
from scipy import linalg

#: Largest condition number of a (regularised) Gram matrix the linear policies accept. float64
#: keeps about 16 significant digits; beyond 1e12 fewer than 4 survive in A^-1, so posterior
#: means and widths would be noise that looks like numbers (seen with l2 = 1e-12 and collinear
#: features). Refusing is better than logging garbage propensities.
MAX_CONDITION = 1e12


def _refuse(what: str, eig: np.ndarray, problem: str) -> FloatingPointError:
    lo, hi = float(eig.min()), float(eig.max())
    cond = abs(hi / lo) if lo else float("inf")
    return FloatingPointError(
        f"{what} is {problem} (smallest eigenvalue {lo:.3g}, condition number {cond:.3g}); "
        f"increase the policy's l2 regularisation (e.g. policy.l2=1)")


def check_conditioning(matrices: np.ndarray, what: str) -> None:
    """Raise :class:`FloatingPointError` if any symmetric matrix of ``matrices`` (k, k) or
    (m, k, k) is not positive definite or has condition number above :data:`MAX_CONDITION`."""
    eig = np.linalg.eigvalsh(matrices).reshape(-1, matrices.shape[-1])
    lo, hi = eig.min(axis=1), eig.max(axis=1)
    worst = int(np.argmax(np.where(lo > 0, hi / np.where(lo > 0, lo, 1.0), np.inf)))
    if lo[worst] <= 0:
        raise _refuse(what, eig[worst], "not positive definite")
    if hi[worst] > MAX_CONDITION * lo[worst]:
        raise _refuse(what, eig[worst], f"too ill-conditioned (above {MAX_CONDITION:.0e})")


def cholesky(matrix: np.ndarray, what: str) -> np.ndarray:
    """Lower Cholesky factor, or a clear error when the matrix is not positive definite or too
    ill-conditioned for its inverse to mean anything."""
    try:
        chol = linalg.cholesky(matrix, lower=True)
    except linalg.LinAlgError:
        raise _refuse(what, np.linalg.eigvalsh(matrix), "not positive definite") from None
    # Once per deploy on a (k, k) matrix with k of a few dozen: microseconds.
    check_conditioning(matrix, what)
    return chol
