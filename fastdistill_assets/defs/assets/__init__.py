"""Thin software-defined assets, one module per plane."""
