#!/usr/bin/env bash
# egress-xds traffic capture: redirect a pod's outbound TCP to the Envoy sidecar.
#
# Runs where an init container would: inside the pod's network namespace, as root (or with
# CAP_NET_ADMIN). The tests, the demo and the kind cluster all run this same script, e.g.
#
#   ip netns exec POD envoy/capture.sh apply --skip-ports 22,15000 --skip-cidrs 203.0.113.5/32
#   ip netns exec POD envoy/capture.sh status
#   ip netns exec POD envoy/capture.sh undo
#
# What `apply` installs (nat table, IPv4; IPv6 too with --ipv6):
#   OUTPUT -p tcp -j EGRESS_XDS_OUTPUT                     (exactly one jump)
#   EGRESS_XDS_OUTPUT:
#     -o lo -j RETURN                                      loopback (incl. the pod's own IPs)
#     -m owner --uid-owner PROXY_UID -j RETURN             Envoy's own upstream connections
#     -p tcp --dport PORT -j RETURN                        each skip port (destination port)
#     -d CIDR -j RETURN                                    each skip CIDR
#     -p tcp -j REDIRECT --to-ports OUTBOUND_PORT          everything else
#
# `apply` is idempotent: it rebuilds the dedicated chain from scratch (so re-running with new
# options replaces the old rules) and keeps a single jump. `undo` removes exactly the jump and
# the chain and nothing else; undo without a prior apply succeeds and does nothing.
# `status` prints the chain and exits 0 when capture is applied, 3 when it is not.
#
# Options (flag, or environment variable):
#   --outbound-port N   EGRESS_XDS_OUTBOUND_PORT   default 15001
#   --proxy-uid N       EGRESS_XDS_PROXY_UID       default 1337
#   --skip-ports LIST   EGRESS_XDS_SKIP_PORTS      comma-separated ports or a:b ranges
#   --skip-cidrs LIST   EGRESS_XDS_SKIP_CIDRS      comma-separated CIDRs (IPv6 ones need --ipv6)
#   --ipv6              EGRESS_XDS_IPV6=1          also capture IPv6 with ip6tables
#   --iptables BIN      EGRESS_XDS_IPTABLES        iptables binary; default: auto (below)
#
# Backend: Debian's `iptables` is iptables-nft. Auto mode uses `iptables` unless the legacy
# backend already holds nat rules and the nft one does not (then iptables-legacy), so
# apply/undo/status keep talking to the backend that holds the rules.
set -euo pipefail

CHAIN=EGRESS_XDS_OUTPUT
OUTBOUND_PORT="${EGRESS_XDS_OUTBOUND_PORT:-15001}"
PROXY_UID="${EGRESS_XDS_PROXY_UID:-1337}"
SKIP_PORTS="${EGRESS_XDS_SKIP_PORTS:-}"
SKIP_CIDRS="${EGRESS_XDS_SKIP_CIDRS:-}"
IPV6="${EGRESS_XDS_IPV6:-0}"
IPTABLES="${EGRESS_XDS_IPTABLES:-auto}"

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

die() {
    echo "capture.sh: $*" >&2
    exit 2
}

[ $# -ge 1 ] || usage
case "$1" in -h|--help|help) usage 0 ;; esac
ACTION="$1"
shift
while [ $# -gt 0 ]; do
    case "$1" in
        --outbound-port) OUTBOUND_PORT="${2:?}"; shift 2 ;;
        --outbound-port=*) OUTBOUND_PORT="${1#*=}"; shift ;;
        --proxy-uid) PROXY_UID="${2:?}"; shift 2 ;;
        --proxy-uid=*) PROXY_UID="${1#*=}"; shift ;;
        --skip-ports) SKIP_PORTS="${2?}"; shift 2 ;;
        --skip-ports=*) SKIP_PORTS="${1#*=}"; shift ;;
        --skip-cidrs) SKIP_CIDRS="${2?}"; shift 2 ;;
        --skip-cidrs=*) SKIP_CIDRS="${1#*=}"; shift ;;
        --ipv6) IPV6=1; shift ;;
        --iptables) IPTABLES="${2:?}"; shift 2 ;;
        --iptables=*) IPTABLES="${1#*=}"; shift ;;
        -h|--help) usage 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done

is_port() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }

is_port "$OUTBOUND_PORT" || die "invalid outbound port: $OUTBOUND_PORT"
[[ "$PROXY_UID" =~ ^[0-9]+$ ]] || die "invalid proxy uid: $PROXY_UID"

# Parse the lists once, so a typo fails before any rule changes.
PORTS=()
IFS=',' read -r -a _raw <<<"${SKIP_PORTS// /}"
for p in "${_raw[@]}"; do
    [ -n "$p" ] || continue
    if [[ "$p" =~ ^([0-9]+):([0-9]+)$ ]]; then
        lo="${BASH_REMATCH[1]}"
        hi="${BASH_REMATCH[2]}"
        { is_port "$lo" && is_port "$hi" && [ "$lo" -le "$hi" ]; } || die "invalid skip port range: $p"
    else
        is_port "$p" || die "invalid skip port: $p"
    fi
    PORTS+=("$p")
done
CIDRS4=()
CIDRS6=()
IFS=',' read -r -a _raw <<<"${SKIP_CIDRS// /}"
for c in "${_raw[@]}"; do
    [ -n "$c" ] || continue
    if [[ "$c" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?$ ]]; then
        CIDRS4+=("$c")
    elif [[ "$c" =~ ^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(/[0-9]{1,3})?$ ]]; then
        CIDRS6+=("$c")
    else
        die "invalid skip CIDR: $c"
    fi
done
if [ "${#CIDRS6[@]}" -gt 0 ] && [ "$IPV6" != 1 ]; then
    die "IPv6 skip CIDRs given without --ipv6: ${CIDRS6[*]}"
fi

# nat rules other than the built-in policies, for one backend ("" when the binary is absent).
# The legacy nat table is only read when the kernel lists it for this namespace: merely
# running iptables-legacy would instantiate empty legacy tables here.
nat_rules() {
    local bin="$1" names=/proc/net/ip_tables_names
    [[ "$bin" == ip6tables* ]] && names=/proc/net/ip6_tables_names
    command -v "$bin-save" >/dev/null 2>&1 || return 0
    if [[ "$bin" == *-legacy ]] && ! grep -qx nat "$names" 2>/dev/null; then
        return 0
    fi
    "$bin-save" -t nat 2>/dev/null | grep -E '^-A ' || true
}

# Resolve the binary for one family: "iptables" or "ip6tables".
backend() {
    local family="$1"
    if [ "$IPTABLES" != auto ]; then
        if [ "$family" = ip6tables ]; then
            echo "${IPTABLES/iptables/ip6tables}"
        else
            echo "$IPTABLES"
        fi
        return
    fi
    command -v "$family" >/dev/null 2>&1 || die "$family not found (apt-get install -y iptables)"
    if command -v "$family-legacy" >/dev/null 2>&1 && command -v "$family-nft" >/dev/null 2>&1; then
        if [ -n "$(nat_rules "$family-legacy")" ] && [ -z "$(nat_rules "$family-nft")" ]; then
            echo "$family-legacy"
            return
        fi
    fi
    echo "$family"
}

chain_exists() { "$1" -w 5 -t nat -S "$CHAIN" >/dev/null 2>&1; }
jump_exists() { "$1" -w 5 -t nat -C OUTPUT -p tcp -j "$CHAIN" >/dev/null 2>&1; }

apply_family() {
    local ipt="$1"
    shift
    local cidrs=("$@")
    if chain_exists "$ipt"; then
        "$ipt" -w 5 -t nat -F "$CHAIN"
    else
        "$ipt" -w 5 -t nat -N "$CHAIN"
    fi
    "$ipt" -w 5 -t nat -A "$CHAIN" -o lo -j RETURN
    "$ipt" -w 5 -t nat -A "$CHAIN" -m owner --uid-owner "$PROXY_UID" -j RETURN
    local p c
    for p in "${PORTS[@]}"; do
        "$ipt" -w 5 -t nat -A "$CHAIN" -p tcp --dport "$p" -j RETURN
    done
    for c in "${cidrs[@]}"; do
        [ -n "$c" ] || continue
        "$ipt" -w 5 -t nat -A "$CHAIN" -d "$c" -j RETURN
    done
    "$ipt" -w 5 -t nat -A "$CHAIN" -p tcp -j REDIRECT --to-ports "$OUTBOUND_PORT"
    # Exactly one jump, appended after whatever else the pod's OUTPUT chain holds.
    while jump_exists "$ipt"; do
        "$ipt" -w 5 -t nat -D OUTPUT -p tcp -j "$CHAIN"
    done
    "$ipt" -w 5 -t nat -A OUTPUT -p tcp -j "$CHAIN"
}

undo_family() {
    local ipt="$1"
    command -v "$ipt" >/dev/null 2>&1 || return 0
    while jump_exists "$ipt"; do
        "$ipt" -w 5 -t nat -D OUTPUT -p tcp -j "$CHAIN"
    done
    if chain_exists "$ipt"; then
        "$ipt" -w 5 -t nat -F "$CHAIN"
        "$ipt" -w 5 -t nat -X "$CHAIN"
    fi
}

families() {
    echo iptables
    if [ "$IPV6" = 1 ]; then echo ip6tables; fi
}

case "$ACTION" in
    apply)
        IPT4="$(backend iptables)"
        apply_family "$IPT4" "${CIDRS4[@]+"${CIDRS4[@]}"}"
        if [ "$IPV6" = 1 ]; then
            apply_family "$(backend ip6tables)" "${CIDRS6[@]+"${CIDRS6[@]}"}"
        fi
        echo "capture applied: outbound tcp -> :$OUTBOUND_PORT (proxy uid $PROXY_UID; $IPT4)"
        ;;
    undo)
        # Undo both families whatever the flags say, so a forgotten --ipv6 leaves nothing.
        undo_family "$(backend iptables)"
        if command -v ip6tables >/dev/null 2>&1; then
            undo_family "$(backend ip6tables)"
        fi
        echo "capture removed"
        ;;
    status)
        applied=0
        for fam in $(families); do
            ipt="$(backend "$fam")"
            if chain_exists "$ipt" && jump_exists "$ipt"; then
                echo "# $ipt: applied"
                "$ipt" -w 5 -t nat -S "$CHAIN"
                applied=1
            else
                echo "# $ipt: not applied"
            fi
        done
        [ "$applied" = 1 ] || exit 3
        ;;
    *)
        usage
        ;;
esac
