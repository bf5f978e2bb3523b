"""Benchmarks for clipd (not tests): run with `make bench`; each prints a table."""
