"""Theories of when grokking happens, fitted to runs and sweeps (weight norm, delay law, ...)."""
