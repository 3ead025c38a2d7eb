"""The paper's baselines (DESIGN §1.6)."""
