"""Layer 6, plugin: the pytest plugin (options, session, xdist roles, results, fixtures, progress)."""
