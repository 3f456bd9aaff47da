"""Hot-path benchmarks and the synthetic-leg load generator."""
