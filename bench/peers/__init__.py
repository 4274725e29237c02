"""The reference servers the benchmarks compare the bridge with, each started by the benchmark on loopback."""
