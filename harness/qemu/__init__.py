"""Layer 2 (beside report), qemu: a QEMU binary and what it supports (QMP schema, version, machine/CPU choice, known
bugs), the QMP client, the guest image."""
