"""Who does which step when: the runner, the scheduler, leases, limits and the status watch, embedded or on Redis."""
