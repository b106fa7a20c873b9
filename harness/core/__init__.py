"""Layer 0, core: units, statistics, private work dirs and the checkout — no QEMU, no process, no socket."""
