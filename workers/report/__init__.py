"""``feedbackflow report``: the read model drawn as one PNG (matplotlib), for people without
Grafana.  ``data`` reads the typed queries of ``workers.read_model.queries`` (the dashboards'
own), ``figure`` draws them, ``command`` is the command line."""
