"""Preference sweeps, empirical fronts, steerability metrics, plots and reports (DESIGN §1.5)."""
