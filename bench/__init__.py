"""Benchmarks (throughput, ingest, quality) and their recorded results; see bench/README.md."""
