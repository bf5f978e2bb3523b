"""Benchmarks for clipd (not tests): run with `make bench`; each prints a table."""

# Before any bench module loads ONNX Runtime (bench.int8 does, and rclip runs it): clipd's
# package turns its telemetry off (clipd/__init__.py).
import clipd  # noqa: F401
