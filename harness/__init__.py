"""A test harness for QEMU live migration: real guests, real workloads, QMP oracles."""
