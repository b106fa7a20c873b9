"""Layer 5, migration: driving a migration between two Machines, sampling query-migrate, the testbed (and its Pair)
and the shared scenario skeletons."""
