"""Who is who: the process table, containers, the Docker Engine API, the host."""
