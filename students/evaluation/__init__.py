"""Evaluation floor: eval data, predictions and metrics."""
