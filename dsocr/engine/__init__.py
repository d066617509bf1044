"""The fast engine: faster implementations of model parts, checked against the reference modules."""
