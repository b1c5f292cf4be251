"""Analysis of checkpoints and runs: Fourier tools, progress measures, representations, phases."""

from interp.analysis.run_table import analyze, load_analysis

__all__ = ["analyze", "load_analysis"]
