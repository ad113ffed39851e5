"""Fixture plugins that are broken on purpose (see tests/test_plugin_manager.py)."""
