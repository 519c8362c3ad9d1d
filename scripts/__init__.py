"""Command-line programs that are not notebook parts (the DDP launcher, benchmarks)."""
