"""Layer 3, vm: one QEMU guest's lifecycle (Machine), SSH into it, the workloads it runs, the accelerator probe."""
