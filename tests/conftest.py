import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["WIDELIMIT_COMPILE_CACHE"] = ""  # CLI tests must not write to ~/.cache


def pytest_configure(config):
    """Two settings for the whole run, through environment variables that the test workers and
    the CLI, benchmark and notebook subprocesses inherit.

    - XLA compiles at backend optimisation level 0: most tests are short and spend their time
      compiling (the suite takes about 16 % less time; the programs are the same HLO, only LLVM's
      own optimisation of them is skipped). ``WIDELIMIT_TEST_XLA_O0=0`` turns it off.
    - One XLA compilation cache, in a temporary directory (JAX's own variables, read when jax is
      imported): a program compiled once is loaded, not compiled, by every later process and
      after each module's ``jax.clear_caches``. It starts empty, so every run compiles everything
      at least once; ``WIDELIMIT_TEST_XLA_CACHE=0`` turns it off."""
    if hasattr(config, "workerinput"):
        return  # a worker inherits the controller's environment
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("WIDELIMIT_TEST_XLA_O0") != "0" and "optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
    if os.environ.get("WIDELIMIT_TEST_XLA_CACHE") == "0":
        return
    path = tempfile.mkdtemp(prefix="widelimit-test-xla-")
    config._widelimit_xla_cache = path
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
    jax.config.update("jax_compilation_cache_dir", path)  # this process (no xdist)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def pytest_unconfigure(config):
    path = getattr(config, "_widelimit_xla_cache", None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


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
