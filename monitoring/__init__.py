"""Monitoring: training-time baselines, drift and live-quality checks on captured traffic, doctors'
feedback, and the retraining trigger (docs/operations.md)."""
