#!/usr/bin/env bash
# Requests from the demo pod (namespace demo, Envoy sidecar) with the expected result of each.
# Run kind-cluster/up.sh first. Exit status 0 when every result is as expected.
set -uo pipefail

CLUSTER="${CLUSTER:-egress-xds}"
CTX="kind-${CLUSTER}"
failures=0

# Run curl in the app container: prints the HTTP status (000 when the connection failed).
curl_in_pod() {
    kubectl --context "$CTX" -n demo exec deploy/client -c app -- \
        curl -sS -o /dev/null -m 10 -w '%{http_code}' "$@" 2>/dev/null
}

check() {
    local expected="$1" what="$2"
    shift 2
    local got
    got="$(curl_in_pod "$@")"
    if [ "$got" = "$expected" ]; then
        printf 'ok    %-58s %s\n' "$what" "$got"
    else
        printf 'FAIL  %-58s got %s, expected %s\n' "$what" "$got" "$expected"
        failures=$((failures + 1))
    fi
}

echo "== allowed"
check 200 "GET http://httpbin.org/get           (HTTPRoute httpbin-get)" http://httpbin.org/get
check 200 "GET http://httpbin.org/headers       (HTTPRoute httpbin-get)" http://httpbin.org/headers
check 200 "POST http://httpbin.org/anything     (consumer route in demo)" -X POST http://httpbin.org/anything
check 200 "GET https://example.com              (TLSRoute example-tls)" https://example.com/

echo "== denied"
check 403 "POST http://httpbin.org/post         (no route: 403)" -X POST http://httpbin.org/post
check 403 "GET http://example.com/              (other host: 403)" http://example.com/
check 000 "GET https://httpbin.org/get          (SNI not allowed: closed)" https://httpbin.org/get

echo "== why: the 403 names the EgressNetwork"
kubectl --context "$CTX" -n demo exec deploy/client -c app -- \
    curl -sS -m 10 -D - -o /dev/null -X POST http://httpbin.org/post 2>/dev/null | grep -i '^x-egress-denied-by' \
    || { echo "FAIL  no x-egress-denied-by header"; failures=$((failures + 1)); }

echo "== statuses written back (Accepted / ResolvedRefs)"
kubectl --context "$CTX" get egressnetworks -A
kubectl --context "$CTX" get httproutes,tlsroutes -A \
    -o custom-columns='KIND:.kind,NAMESPACE:.metadata.namespace,NAME:.metadata.name,ACCEPTED:.status.parents[*].conditions[?(@.type=="Accepted")].reason'

echo "== the sidecar's access log (last lines)"
kubectl --context "$CTX" -n demo logs deploy/client -c envoy --tail=5 || true

if [ "$failures" -gt 0 ]; then
    echo "$failures unexpected result(s)"
    exit 1
fi
echo "all results as expected"
