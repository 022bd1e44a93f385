"""What the tests, the benchmarks and the tools share: a real rsubd launcher, deadlines, job files."""
