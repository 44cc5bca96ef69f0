"""Tests listed in tests/slow_tests.txt run only with ``-m slow`` (CI runs both).

The list holds the tests that took over 8 s each in a full run on this
project's 2-core machine (from ``pytest --durations``); keeping them out of the
default run keeps the README's test command under 10 minutes. Test ids are
exact (``path::name[param]``) or a whole module (``path``).

The run keeps XLA's persistent compilation cache in ``.cache/jax`` (unless
``JAX_COMPILATION_CACHE_DIR`` names another place): many tests compile the
same programs (a resumed run recompiles what the unbroken run compiled; the
contract's cases of one workload share their train and eval steps), and
subprocess tests inherit it through the environment. A cached executable is
the one XLA would have compiled, so results do not change.
"""

from __future__ import annotations

import os

import pytest

_LIST = os.path.join(os.path.dirname(__file__), "slow_tests.txt")
_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      ".cache", "jax")

# Before jax is imported: jax reads these at import, and child processes inherit them.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 1024**3))


def _slow_ids() -> set[str]:
  with open(_LIST) as f:
    return {line.split("#")[0].strip() for line in f} - {""}


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marks
def pytest_collection_modifyitems(config, items):
  del config
  slow = _slow_ids()
  for item in items:
    if item.nodeid in slow or item.nodeid.split("::")[0] in slow:
      item.add_marker(pytest.mark.slow)
