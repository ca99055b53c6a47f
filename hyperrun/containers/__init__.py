"""Containers: running one (RunSpec to exit status), their records, clean-up after them."""
