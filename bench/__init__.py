"""Benchmarks of the pipeline: ingestion end to end, the read API and validation alone.

Run them from the project root with the venv; see bench/README.md and docs/benchmarks.md.
"""
