"""Figures (plotly) and offline HTML reports."""
