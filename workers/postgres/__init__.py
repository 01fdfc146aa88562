"""PostgreSQL: the window sink, its SQL, day partitions, retention, migrations."""
