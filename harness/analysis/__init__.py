"""Layer 1, analysis: pure computation over what a test recorded (samples, series, latency, trace, iteration, RAM
comparison) and the oracles' Verdicts. Imports only core; starts no process, opens no socket (pyproject.toml's
import contracts)."""
