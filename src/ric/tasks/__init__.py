"""The embedded default task: offline data, configs and the one-command demo."""
