"""The PNG report (matplotlib) over ``workers.read_model``.  Not built yet: issue "Grafana
dashboards on a read model"."""
