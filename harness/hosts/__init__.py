"""Layer 3, hosts: where a QEMU runs (the QemuHost interface: this host, a remote one over SSH), network namespaces
and links, ports and the CPU budget."""
