"""What every benchmark records about the machine it ran on, and where it writes its results."""

import json
import os
import pathlib
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


def save_results(name: str, rows: list, quick: bool) -> None:
    """Write benchmarks/results/<name>.json with the machine, the mode and the rows."""
    path = pathlib.Path(__file__).parent / "results" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), "quick": quick, "rows": rows}, indent=2))
    print(f"wrote {path}")
