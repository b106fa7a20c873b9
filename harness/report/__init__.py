"""Layer 5, report: a test's artefacts on disk, plots, the run index."""
