"""Data in and results out: APS 8-ID-I HDF5 files (both layouts) and fit results on disk.

Needs the optional ``h5py`` (``pip install 'homodyne[hdf5]'``) for HDF5 files.
"""

from .._plot import (
    aged_g2,
    plot_aged_g2,
    plot_c2,
    plot_fit,
    plot_g2_cuts,
    plot_rates,
    plot_rings,
    rate_bands,
)
from .._plot_posterior import (
    plot_corner,
    plot_posterior_rates,
    plot_predictive_cuts,
    plot_traces,
    predictive_cuts,
    rate_draws,
)
from ._aps import (
    BadFramesWarning,
    BinInfo,
    FileInfo,
    TwoTimeDataset,
    inspect_file,
    load_two_time,
)
from ._draws import SavedPosterior, load_posterior, save_posterior
from ._results import SavedFit, load_fit, save_fit, save_joint_fit
from ._write import write_aps_file

__all__ = [
    "BadFramesWarning",
    "BinInfo",
    "FileInfo",
    "SavedFit",
    "SavedPosterior",
    "TwoTimeDataset",
    "aged_g2",
    "inspect_file",
    "load_fit",
    "load_posterior",
    "load_two_time",
    "plot_aged_g2",
    "plot_c2",
    "plot_corner",
    "plot_fit",
    "plot_g2_cuts",
    "plot_posterior_rates",
    "plot_predictive_cuts",
    "plot_rates",
    "plot_rings",
    "plot_traces",
    "predictive_cuts",
    "rate_bands",
    "rate_draws",
    "save_fit",
    "save_joint_fit",
    "save_posterior",
    "write_aps_file",
]
