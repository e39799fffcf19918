#!/usr/bin/env bash
# Create a kind cluster running egress-xds and a demo workload with the Envoy sidecar.
#
#   kind-cluster/up.sh            # then kind-cluster/demo.sh, and kind-cluster/down.sh
#
# Needs docker (or podman with KIND_EXPERIMENTAL_PROVIDER=podman), kind >= 0.24 and kubectl,
# and internet access for the Gateway API CRDs and the Envoy and curl images.
# Environment: CLUSTER (default egress-xds), GATEWAY_API_VERSION (default v1.2.1: its
# experimental channel serves TLSRoute and TCPRoute v1alpha2, which egress-xds reads),
# DOCKER (default docker).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CLUSTER="${CLUSTER:-egress-xds}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.2.1}"
GATEWAY_API_URL="https://github.com/kubernetes-sigs/gateway-api/releases/download/${GATEWAY_API_VERSION}/experimental-install.yaml"
DOCKER="${DOCKER:-docker}"
CTX="kind-${CLUSTER}"

step() { printf '\n==> %s\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "up.sh: $1 is required" >&2; exit 1; }; }
need kind
need kubectl
need "$DOCKER"

step "kind cluster ${CLUSTER}"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    echo "cluster ${CLUSTER} exists: reusing it"
else
    kind create cluster --name "$CLUSTER" --config "$HERE/kind-config.yaml" --wait 120s
fi
kubectl config use-context "$CTX" >/dev/null

step "Gateway API ${GATEWAY_API_VERSION} CRDs (experimental channel: TLSRoute, TCPRoute)"
kubectl --context "$CTX" apply --server-side -f "$GATEWAY_API_URL"

step "EgressNetwork CRD"
kubectl --context "$CTX" apply --server-side -f "$HERE/crds/"
kubectl --context "$CTX" wait --for condition=Established --timeout=60s \
    crd/egressnetworks.policy.linkerd.io crd/httproutes.gateway.networking.k8s.io \
    crd/grpcroutes.gateway.networking.k8s.io crd/tlsroutes.gateway.networking.k8s.io \
    crd/tcproutes.gateway.networking.k8s.io

step "images: egress-xds:dev (control plane) and egress-xds-capture:dev (init container)"
"$DOCKER" build -f "$ROOT/Dockerfile" --target runtime -t egress-xds:dev "$ROOT"
"$DOCKER" build -f "$ROOT/Dockerfile" --target capture -t egress-xds-capture:dev "$ROOT"
kind load docker-image --name "$CLUSTER" egress-xds:dev egress-xds-capture:dev

step "egress-xds control plane (2 replicas, Lease egress-xds/egress-xds)"
kubectl --context "$CTX" apply -f "$HERE/manifests/egress-xds.yaml"
kubectl --context "$CTX" -n egress-xds rollout restart deployment/egress-xds >/dev/null 2>&1 || true
kubectl --context "$CTX" -n egress-xds rollout status deployment/egress-xds --timeout=180s

step "demo workload (namespace demo) and egress policy"
kubectl --context "$CTX" apply -f "$HERE/manifests/demo.yaml"
kubectl --context "$CTX" apply -f "$HERE/manifests/egress-policy.yaml"
kubectl --context "$CTX" apply -f "$HERE/manifests/networkpolicy.yaml"
kubectl --context "$CTX" -n demo rollout status deployment/client --timeout=180s

step "status written back by the Lease holder"
for _ in $(seq 1 30); do
    accepted="$(kubectl --context "$CTX" -n linkerd-egress get egressnetwork internet \
        -o jsonpath='{.status.conditions[?(@.type=="Accepted")].status}' 2>/dev/null || true)"
    [ "$accepted" = True ] && break
    sleep 1
done
kubectl --context "$CTX" get egressnetworks -A
kubectl --context "$CTX" -n egress-xds get lease egress-xds -o jsonpath='{"lease holder: "}{.spec.holderIdentity}{"\n"}'

cat <<DONE

egress-xds is running. Next:
  $HERE/demo.sh     # allowed and denied requests from the demo pod
  $HERE/down.sh     # delete the cluster
DONE
