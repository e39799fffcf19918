#!/usr/bin/env bash
# Delete the kind cluster that up.sh created (and everything in it).
set -euo pipefail
CLUSTER="${CLUSTER:-egress-xds}"
kind delete cluster --name "$CLUSTER"
