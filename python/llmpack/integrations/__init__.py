"""Integrations with serving engines (imported only on demand)."""
