"""Benchmarks (not tests): `python -m bench --help`."""
