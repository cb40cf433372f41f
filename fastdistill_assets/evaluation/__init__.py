"""Evaluation plane: held-out accuracy, baselines, win rate, timing report, hard gates."""
