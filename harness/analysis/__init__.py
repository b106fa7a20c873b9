"""Layer 4, analysis: pure computation over what a test recorded (series, windows, latency, trace, iteration, RAM comparison) and the oracles' Verdicts."""
