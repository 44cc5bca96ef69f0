"""Tests listed in tests/slow_tests.txt run only with ``-m slow`` (CI runs both).

The list holds the tests that took over 8 s each in a full run on this
project's 2-core machine (from ``pytest --durations``); keeping them out of the
default run keeps the README's test command under 10 minutes. Test ids are
exact (``path::name[param]``) or a whole module (``path``).
"""

from __future__ import annotations

import os

import pytest

_LIST = os.path.join(os.path.dirname(__file__), "slow_tests.txt")


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
