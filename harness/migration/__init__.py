"""Layer 4, migration: driving a migration between two Machines, sampling query-migrate, the testbed and the shared scenario skeletons."""
