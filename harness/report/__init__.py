"""Layer 2 (beside qemu, independent of it), report: a test's artefacts on disk, plots, the run index. Imports only
analysis and core, so a tool that reads result files (matrix) never loads the VM stack."""
