"""The kernel side: the libbpf binding, loading the programs, the ring buffer, BTF, records."""
