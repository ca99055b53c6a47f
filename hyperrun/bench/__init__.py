"""Benchmarks of hyperrun itself (`hyperrun bench`, `hyperrun compare`): driving runs,
timing them, and probing instances side by side.

Above `containers/` and beside `cli/` (docs/architecture.md); nothing here prints: the
CLI shows progress and results.
"""
