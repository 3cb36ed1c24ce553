"""Feature matrices are CSR or dense (processing/features.py): the one test of which, typed for the checker."""
from __future__ import annotations

from typing import TYPE_CHECKING

import scipy.sparse as sp

if TYPE_CHECKING:
    from scipy.sparse._base import _spbase
    from typing_extensions import TypeIs


def is_sparse(X: object) -> TypeIs[_spbase]:
    """``scipy.sparse.issparse``, narrowing to the base of scipy's sparse classes as its stubs declare it.

    scipy-stubs narrows ``issparse`` to ``SparseABC``, which declares no methods (scipy/scipy-stubs#2093); the
    class that does, ``_spbase``, is private in scipy, so it is named here for the checker only.
    """
    return sp.issparse(X)
