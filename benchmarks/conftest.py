"""Benchmarks run with one torch thread, as the tests do (the fixture is the tests' own)."""

from tests.conftest import _one_torch_thread  # noqa: F401  (autouse fixture)
