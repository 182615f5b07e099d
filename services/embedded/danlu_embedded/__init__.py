"""The embedded default: every danlu service in one process on one port."""
