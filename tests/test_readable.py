"""What users read: printed parameters and the rounding of the summary table."""

import jax
import jax.numpy as jnp
import pytest

from homodyne import LaminarFlowParams, StaticParams
from homodyne._result import round_to_error


@pytest.mark.parametrize(
    "value, error, expected",
    [
        (10648.392, 337.81, ("10650", "340")),  # the last digit shown: tens
        (-0.474124, 0.0317, ("-0.474", "0.032")),
        (2.0, 12.56, ("2", "13")),
        (0.0015, 2.3e-5, ("0.001500", "0.000023")),
        (1.0590055e7, 4.28317e5, ("1.059e+07", "4.3e+05")),  # scientific beyond 1e6
        (5e-5, 1e-6, ("5.00e-05", "1.0e-06")),  # and below 1e-3
        (999.96, 0.99, ("999.96", "0.99")),
        (3.0, 0.0, ("3", "0")),  # held fixed
        (11.8254, float("inf"), ("11.8254", "inf")),  # not determined
    ],
)
def test_values_round_to_two_digits_of_their_error(value, error, expected):
    assert round_to_error(value, error) == expected


def test_printed_parameters_show_values():
    p = StaticParams(1.2e4, -0.5, 50.0)
    assert repr(p) == "StaticParams(D0=12000.0, alpha=-0.5, D_offset=50.0)"
    assert str(p) == repr(p)
    batch = LaminarFlowParams.from_array(jnp.arange(14.0).reshape(2, 7))
    assert repr(batch).startswith("LaminarFlowParams(D0=[0. 7.], alpha=[1. 8.], ")
    # traced values have none to show: the fields' types and shapes
    seen = []
    jax.jit(lambda q: seen.append(repr(q)) or q.D0)(p)
    assert seen == ["StaticParams(D0=f64[], alpha=f64[], D_offset=f64[])"]
