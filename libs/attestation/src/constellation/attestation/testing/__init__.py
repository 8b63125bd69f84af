"""Test support shipped with the library: pytest fixtures for real local parts (swtpm)."""
