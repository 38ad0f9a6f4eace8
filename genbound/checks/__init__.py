"""Self-checks of validity: coverage (simulated failure rates) and memorization."""
