"""Serving: the ADS gRPC service (``ads``), the HTTP debug endpoint (``debug``) and metrics.

In: snapshots from ``egress_xds.cache``. Out: xDS responses to sidecars, JSON and Prometheus
text to operators. Wired up by ``egress_xds.serve``; never imports the translators.
"""
