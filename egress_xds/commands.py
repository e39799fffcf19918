"""Offline commands on manifest files: ``translate``, ``validate``, ``explain`` (which asks a
running ``serve`` instead with ``--server``, through ``egress_xds.admin.client``).

In: parsed CLI arguments. Out: text or JSON/YAML on stdout, load errors on stderr, an exit
code. Wiring only: loading is ``model``, decisions are ``translate.Translator``.
Called by ``egress_xds.cli``; ``serve`` reuses ``add_translator_options``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any

import yaml

from egress_xds.model.load import LoadResult, load_paths
from egress_xds.model.objects import parse_port_list
from egress_xds.resolve.status import invalid_objects
from egress_xds.resolve.world import (
    DEFAULT_CLUSTER_NETWORKS,
    DEFAULT_CONTROLLER_NAME,
    DEFAULT_DETECT_TIMEOUT_MS,
    DEFAULT_GLOBAL_NAMESPACE,
    DEFAULT_LISTENER_ADDRESSES,
    DEFAULT_OPAQUE_PORTS,
    DEFAULT_OUTBOUND_PORT,
)
from egress_xds.resources import dump
from egress_xds.translate import Translator, TranslatorOptions


def add_translator_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("translation")
    group.add_argument("--cluster-networks", default=",".join(DEFAULT_CLUSTER_NETWORKS),
                       help="comma-separated CIDRs that are inside the cluster (default: %(default)s)")
    group.add_argument("--global-egress-namespace", default=DEFAULT_GLOBAL_NAMESPACE,
                       help="namespace whose EgressNetworks apply to namespaces without their own (default: %(default)s)")
    group.add_argument("--outbound-port", type=int, default=DEFAULT_OUTBOUND_PORT,
                       help="port of the sidecar's outbound listener (default: %(default)s)")
    group.add_argument("--opaque-ports", default=",".join(map(str, DEFAULT_OPAQUE_PORTS)),
                       help="ports that skip protocol detection (default: %(default)s)")
    group.add_argument("--controller-name", default=DEFAULT_CONTROLLER_NAME,
                       help="controllerName in route statuses (default: %(default)s)")
    group.add_argument("--listener-addresses", default=",".join(DEFAULT_LISTENER_ADDRESSES),
                       help="addresses the sidecar's outbound listener binds (default: %(default)s)")
    group.add_argument("--detect-timeout", type=float, default=DEFAULT_DETECT_TIMEOUT_MS / 1000, metavar="SECONDS",
                       help="how long to wait for a client's first bytes to detect TLS/HTTP before treating "
                            "the connection as opaque (default: %(default)s)")


def translator_options(args: argparse.Namespace) -> TranslatorOptions:
    try:
        networks = TranslatorOptions.networks(n.strip() for n in args.cluster_networks.split(",") if n.strip())
    except ValueError as err:
        raise SystemExit(f"egress-xds: --cluster-networks: {err}") from None
    try:
        opaque = parse_port_list(args.opaque_ports)
    except ValueError as err:
        raise SystemExit(f"egress-xds: --opaque-ports: {err}") from None
    if not 1 <= args.outbound_port <= 65535:
        raise SystemExit("egress-xds: --outbound-port must be within 1-65535")
    addresses = tuple(a.strip() for a in args.listener_addresses.split(",") if a.strip())
    try:
        addresses = tuple(str(ipaddress.ip_address(a)) for a in addresses)
    except ValueError as err:
        raise SystemExit(f"egress-xds: --listener-addresses: {err}") from None
    if not addresses or len(set(addresses)) != len(addresses):
        raise SystemExit("egress-xds: --listener-addresses needs one or more distinct IP addresses")
    if not 0 < args.detect_timeout <= 3600:
        raise SystemExit("egress-xds: --detect-timeout must be more than 0 and at most 3600 seconds")
    return TranslatorOptions(
        cluster_networks=networks,
        global_namespace=args.global_egress_namespace,
        outbound_port=args.outbound_port,
        opaque_ports=opaque,
        controller_name=args.controller_name,
        detect_timeout_ms=round(args.detect_timeout * 1000),
        listener_addresses=addresses,
    )


def _add_files(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("-f", "--filename", dest="paths", action="extend", nargs="+", required=required, metavar="PATH",
                        help="manifest file or directory (repeatable)")


def _load(args: argparse.Namespace) -> tuple[LoadResult, Translator]:
    result = load_paths(args.paths)
    translator = Translator(translator_options(args))
    translator.load(result.objects)
    return result, translator


def _report_errors(result: LoadResult) -> None:
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)


def _print(data: Any, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120), end="")


def cmd_translate(args: argparse.Namespace) -> int:
    result, translator = _load(args)
    _report_errors(result)
    _print(dump(translator.resources(args.namespace)), args.output)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    result, translator = _load(args)
    report = translator.status_report(result.errors)
    problems = invalid_objects(report)
    if args.output == "json":
        _print(report, "json")
    else:
        for notice in result.notices:
            print(f"notice: {notice}")
        for obj in report["objects"]:
            label = f"{obj['kind']} {obj['namespace']}/{obj['name']}"
            for cond in obj["conditions"]:
                print(f"{label}: {cond['type']}={cond['status']} ({cond['reason']}){': ' + cond['message'] if cond['message'] else ''}")
            for parent in obj["parents"]:
                ref = parent["parentRef"]
                conds = ", ".join(f"{c['type']}={c['status']} ({c['reason']}{': ' + c['message'] if c['message'] else ''})"
                                  for c in parent["conditions"])
                port = f":{ref['port']}" if "port" in ref else ""
                print(f"{label} -> EgressNetwork {ref['namespace']}/{ref['name']}{port}: {conds}")
        for error in result.errors:
            print(f"error: {error}")
        print(f"{len(report['objects'])} objects, {len(problems)} not accepted or unresolved, {len(result.errors)} errors")
    return 1 if problems or result.errors else 0


def parse_destination(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{value!r}: expected IP:PORT (IPv6 as [IP]:PORT)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected IP:PORT (IPv6 as [IP]:PORT)") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r}: port must be within 1-65535")
    return str(address), number


def cmd_explain(args: argparse.Namespace) -> int:
    ip, port = args.to
    if bool(args.server) == bool(args.paths):
        print("egress-xds explain: give either -f/--filename (offline) or --server (a running serve)",
              file=sys.stderr)
        return 2
    if args.server:
        from egress_xds.admin import client

        try:
            verdict = client.explain(args.server, args.namespace, ip, port, sni=args.sni, host=args.host,
                                     path=args.path, method=args.method, tls=client.tls_from_args(args))
        except client.AdminError as err:
            print(f"egress-xds explain: {err}", file=sys.stderr)
            return 1
    else:
        result, translator = _load(args)
        _report_errors(result)
        verdict = translator.explain(args.namespace, ip, port, sni=args.sni, host=args.host, path=args.path,
                                     method=args.method)
    if args.output == "json":
        print(json.dumps(verdict))
        return 0
    action = verdict["action"]
    shown = {
        "forward": f"forward to {verdict['destination']}",
        "redirect": f"redirect to {verdict['destination']}" if verdict["destination"] else "redirect (HTTP 3xx)",
        "deny": "deny",
        "invalid": "invalid backend (HTTP 500 / gRPC UNKNOWN / connection closed)",
    }[action]
    print(f"EgressNetwork: {verdict['egress_network'] or '(none)'}")
    print(f"Route:         {verdict['route'] or '(none)'}")
    print(f"Verdict:       {shown}")
    print(f"Reason:        {verdict['reason']}")
    return 0


def register(sub: Any) -> None:
    from egress_xds.admin.client import add_tls_arguments

    translate = sub.add_parser("translate", help="print the Envoy config a sidecar in a namespace receives")
    _add_files(translate)
    translate.add_argument("--namespace", "-n", required=True, help="client namespace")
    translate.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    add_translator_options(translate)
    translate.set_defaults(func=cmd_translate)

    validate = sub.add_parser("validate", help="print every object's conditions and errors; exit 1 if any is invalid")
    _add_files(validate)
    validate.add_argument("-o", "--output", choices=("text", "json"), default="text")
    add_translator_options(validate)
    validate.set_defaults(func=cmd_validate)

    explain = sub.add_parser("explain", help="explain the verdict for one connection from a namespace")
    _add_files(explain, required=False)
    explain.add_argument("--server", metavar="ADDR",
                         help="ask a running serve (its ADS or --admin-listen address) instead of reading -f files; "
                              "the server's translation options apply")
    add_tls_arguments(explain)
    explain.add_argument("--namespace", "-n", required=True, help="client namespace")
    explain.add_argument("--to", required=True, type=parse_destination, metavar="IP:PORT",
                         help="original destination")
    kind = explain.add_mutually_exclusive_group()
    kind.add_argument("--sni", help="TLS connection with this server name")
    kind.add_argument("--host", help="plaintext HTTP request with this Host")
    explain.add_argument("--path", help="HTTP path (with --host; default /)")
    explain.add_argument("--method", help="HTTP method (with --host; default GET)")
    explain.add_argument("-o", "--output", choices=("text", "json"), default="text")
    add_translator_options(explain)
    explain.set_defaults(func=cmd_explain)
