"""Byte units, spelled once: QMP reports bytes, the tests and reports think in MiB."""

MiB = 1 << 20
