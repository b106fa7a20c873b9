"""Layer 0, core: units, statistics, file and child-process helpers, private work dirs and the checkout — no QEMU."""
