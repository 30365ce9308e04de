"""Deterministic stand-ins for tests and benches: locally built tokenizers and random PRM checkpoints.

Nothing here is ever used as a default; the library itself never imports this package.
"""
