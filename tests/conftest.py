import os

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["WIDELIMIT_COMPILE_CACHE"] = ""  # CLI tests must not write to ~/.cache


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def getkey():
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 1000))
    return lambda: next(keys)
