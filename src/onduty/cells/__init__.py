"""A fleet of managers: each partition of the signals is a cell (its log on PostgreSQL, its core,
its consumer on the bus) run by the manager that holds its lease; ingest nodes hand inputs to
the bus for the cells they belong to."""
