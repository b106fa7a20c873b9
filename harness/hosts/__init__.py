"""Layer 2, hosts: where a QEMU runs (this host, a remote one over SSH), network namespaces and links, ports and the CPU budget."""
