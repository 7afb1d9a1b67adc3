"""specjax: draft-model training and speculative / Jacobi decoding in JAX."""

from specjax.errors import SpecjaxError

__version__ = "0.1.0"
__all__ = ["SpecjaxError", "__version__"]
