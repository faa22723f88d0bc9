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


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """Each compiled XLA:CPU program holds ~3 memory mappings until its cache entry goes. A test
    worker that keeps every program of the suite passes the kernel's 65,530 mappings per process
    (``vm.max_map_count``) and segfaults in the compiler; dropping the caches after each module
    keeps it to one module's programs."""
    yield
    jax.clear_caches()
    import gc

    gc.collect()
