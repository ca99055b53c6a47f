"""Benchmarks of hyperrun itself (`hyperrun bench`): driving runs, timing their phases.

Above `containers/` and beside `cli/` (docs/architecture.md); nothing here prints: the
CLI shows progress and results.
"""
