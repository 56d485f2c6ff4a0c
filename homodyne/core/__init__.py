"""Compatibility namespace: the documented functional API lives in `homodyne.core.jax_backend`."""

from . import jax_backend as jax_backend

__all__ = ["jax_backend"]
