"""The paper's baselines (docs/design.md §1.6)."""
