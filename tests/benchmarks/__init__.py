"""Benchmarks and the load-test runner: run by `nox -s bench` and `nox -s load`, never collected as tests."""
