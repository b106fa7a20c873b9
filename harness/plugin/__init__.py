"""Layer 6, plugin: the pytest plugin (options, session, fixtures, result recording)."""
