"""The benchmark harness: datasets, task contracts, running, scoring, tables and figures."""
