"""Preference sweeps, empirical fronts, steerability metrics, plots and reports
(docs/design.md §1.5)."""
