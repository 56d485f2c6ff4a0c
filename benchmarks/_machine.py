"""What every benchmark records about the machine it ran on."""

import os
import platform


def machine() -> dict:
    from importlib.metadata import version

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        **{
            name: version(name)
            for name in ("homodyne", "jax", "jaxlib", "equinox", "optimistix", "numpy")
        },
    }
