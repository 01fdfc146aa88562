"""The read model: typed queries over what landed, shared by the demo's check, export, the
report and the dashboards."""
