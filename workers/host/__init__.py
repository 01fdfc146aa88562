"""The worker process: assembling the chain, the faust app that hosts it, ``/metrics``,
``/health``."""
