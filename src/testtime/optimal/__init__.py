"""Compute-optimal test-time scaling: sweeps, difficulty, calibration, the selector, the paper's metrics."""
