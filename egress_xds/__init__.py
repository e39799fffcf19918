"""egress-xds: an xDS control plane that gives Envoy sidecars Linkerd-style egress control.

Data flows one way (see ../shared/spec/architecture.md):
manifests -> ``model`` (validated objects) -> ``resolve`` (per-namespace egress IR, statuses)
-> ``envoy`` (Envoy resources) -> ``cache`` (versioned snapshots) -> ``server`` (ADS).
"""

__version__ = "0.1.0"
