"""Layer 4, vm: one QEMU guest's lifecycle (Machine), SSH into it, its RAM dumps, the workloads it runs, the
accelerator probe."""
