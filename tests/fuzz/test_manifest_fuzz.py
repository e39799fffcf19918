"""Fuzzing the loader and the translator with hostile manifest directories (issue 7).

In: ``strategies.directory()``: valid objects spread over files with bad documents, broken
text, duplicates, List documents and empty documents mixed in. For each generated directory
the same files are also written without the bad parts ("clean"). Out: assertions that

(a) loading never raises: every problem becomes a ``LoadError`` (bounded in size);
(b) every bad document yields exactly one error that names it (kind, namespace/name; or, when
    it has no usable name, its file and document index) and the field (exactly, for known
    corruptions; a related path for random ones); every duplicate yields one error at the
    later definition; every broken text one file-level error; unknown kinds only a notice;
(c) the objects loaded from the mixed directory equal, in order and content, those loaded from
    the clean one, and so do their translation (every namespace's Envoy resources from
    ``Translator.resources``, compared message by message), statuses and ``explain`` verdicts;
(d) translating whatever was loaded never raises.

Also: a single file with 10,000 objects, a valid list of 2,000 CIDRs, and one regression test
per bug this fuzzing found. The number of generated cases is printed in the terminal summary
("egress fuzz cases") and recorded with ``record_property``.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings

from egress_xds.model.load import LoadError, LoadResult, load_file, load_paths, parse_text
from egress_xds.resources import dump
from egress_xds.translate import Translator
from tests.property.profiles import profile

from .counts import counter
from .strategies import (
    BROKEN_TEXTS,
    KNOWN_TARGETS,
    NAMESPACES,
    STRUCTURAL_TARGETS,
    Bad,
    Entry,
    FileSpec,
    Layout,
    directory,
    network_entry,
    path_text,
    render,
)

FUZZ_EXAMPLES = 150
QUERIES: list[tuple[str, int, dict[str, Any]]] = [
    ("203.0.113.10", 80, {"host": "api.example.com", "path": "/api"}), ("198.51.100.7", 443, {"sni": "example.com"}),
    ("10.1.2.3", 5432, {}), ("2001:db8::5", 8080, {"host": "partner.example.org"})]


# ---- checks --------------------------------------------------------------------------------


def components(path: str) -> list[str | int]:
    return [int(i) if i else name for i, name in re.findall(r"\[(\d+)\]|([^.\[\]]+)", path)]


def field_ok(error: LoadError, bad: Bad) -> bool:
    if bad.field is not None:
        return error.field == bad.field
    assert bad.path is not None
    want, got = components(path_text(bad.path)), components(error.field)
    # the field itself or below it, one of its parents (a rule over a list), or a sibling (a
    # validator that reads another field: cidr/except, path type/value)
    return bool(got[:len(want)] == want or want[:len(got)] == got and got
                or want and got[:len(want) - 1] == want[:-1])


def identity(error: LoadError) -> tuple[str, str, str]:
    return error.kind, error.namespace, error.name


def translation(objects: list[Any]) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """Everything the objects turn into: Envoy resources per namespace, statuses, verdicts."""
    translator = Translator()
    translator.load(objects)
    spaces = sorted(set(translator.namespaces()) | set(NAMESPACES) | {"elsewhere"})
    # Compared as protobuf messages (equal content, fast); dump() is what serve shows.
    resources = {ns: translator.resources(ns) for ns in spaces}
    verdicts = [translator.explain(ns, ip, port, **kw) for ns in spaces for ip, port, kw in QUERIES]
    return resources, translator.status_report([])["objects"], verdicts


def objects_view(result: LoadResult) -> list[tuple[Any, ...]]:
    return [(o.key, o.model_dump(mode="json"), Path(o.source_file).name) for o in result.objects]


def isolated(bad: Bad, suffix: str, root: Path) -> LoadResult:
    """What the loader says about ``bad`` alone in a file."""
    path = root / f"isolated{suffix}"
    path.write_bytes(render(FileSpec(path.name, [Entry(bad=[bad])])))
    return load_file(path)


def without_prefix(message: str) -> str:
    return re.sub(r"^document \d+: ", "", message)


def clean_layout(layout: Layout, accepted: dict[int, bool]) -> Layout:
    """The same files with only what must load: valid objects and accepted random mutations."""
    files = []
    for spec in layout.files:
        entries = []
        for entry in spec.entries:
            kept = Entry(valid=list(entry.valid) + [b.doc for b in entry.bad if accepted.get(id(b))],
                         as_list=entry.as_list, empty=entry.empty)
            if kept.valid or (kept.empty and not spec.json):
                entries.append(kept)
        if entries:
            files.append(FileSpec(spec.name, entries, spec.style))
    return Layout(files)


def check_errors(layout: Layout, root: Path, result: LoadResult, accepted: dict[int, bool],
                 isolation: dict[int, LoadResult]) -> None:
    by_file: dict[str, list[LoadError]] = {}
    for error in result.errors:
        by_file.setdefault(error.file, []).append(error)
    for spec in layout.files:
        actual = by_file.pop(str(root / spec.name), [])
        context = f"file {spec.name}:\n{render(spec)[:3000]!r}\nerrors: {[str(e)[:300] for e in actual]}"
        for entry in spec.entries:
            for dup in entry.duplicates:
                md = dup["metadata"]
                match = [e for e in actual if identity(e) == (dup["kind"], md["namespace"], md["name"])
                         and e.field == "metadata.name" and e.message.startswith("duplicate:")]
                assert match, f"duplicate {dup['kind']} {md['namespace']}/{md['name']} not reported\n{context}"
                actual.remove(match[0])
        if spec.broken is not None:
            match = [e for e in actual if identity(e) == ("", "", "") and not e.field
                     and e.message.startswith(("cannot parse", "cannot read"))]
            assert match, f"broken text ({spec.broken[0]}) not reported\n{context}"
            actual.remove(match[0])
        expected = [(index, bad) for index, entry in enumerate(spec.entries) for bad in entry.bad
                    if not bad.notice and not accepted.get(id(bad))]
        expected.sort(key=lambda item: item[1].field is None)  # exact fields first
        for index, bad in expected:
            kind, namespace, name = bad.expected_identity()
            match = [e for e in actual if identity(e) == (kind, namespace, name) and field_ok(e, bad)
                     and (name or e.message.startswith(f"document {index + 1}: "))]
            assert match, (f"{bad.what}: no error naming {kind} {namespace}/{name} (document {index + 1}) "
                           f"and field {bad.field if bad.field is not None else path_text(bad.path or ())}\n{context}")
            error = match[0]
            actual.remove(error)
            if bad.maybe_valid:  # rejected alone too, and for the same reason
                (alone,) = isolation[id(bad)].errors
                assert (identity(alone), alone.field, without_prefix(alone.message)) == (
                    identity(error), error.field, without_prefix(error.message)), context
        assert not actual, f"unexpected errors\n{context}"
    assert not by_file, f"errors for files never written: {by_file}"


def check_layout(layout: Layout, root: Path) -> dict[str, int]:
    mixed, clean, scratch = root / "mixed", root / "clean", root / "scratch"
    for d in (mixed, clean, scratch):
        d.mkdir()
    accepted: dict[int, bool] = {}
    isolation: dict[int, LoadResult] = {}
    for spec in layout.files:
        for entry in spec.entries:
            for bad in entry.bad:
                if bad.maybe_valid:
                    alone = isolated(bad, Path(spec.name).suffix, scratch)
                    assert len(alone.objects) + len(alone.errors) == 1, alone
                    accepted[id(bad)] = bool(alone.objects)
                    isolation[id(bad)] = alone
    layout.write(mixed)
    clean_layout(layout, accepted).write(clean)

    got = load_paths([mixed])  # (a): returns, whatever the input
    want = load_paths([clean])
    assert not want.errors, [str(e) for e in want.errors]
    for error in got.errors:
        assert isinstance(error, LoadError) and len(str(error)) < 1500, str(error)[:2000]
        assert error.as_dict()["file"].startswith(str(mixed))
    # (b)
    check_errors(layout, mixed, got, accepted, isolation)
    notices = sum(b.notice for b in layout.bad())
    assert len(got.notices) == len(want.notices) + notices, got.notices
    # (c), (d)
    assert objects_view(got) == objects_view(want)
    assert translation(got.objects) == translation(want.objects)
    return {"directories": 1, "files": len(layout.files), "documents": layout.cases(),
            "valid_objects": len(want.objects), "bad_documents": len(layout.bad()),
            "random_mutations_accepted": sum(accepted.values()),
            "duplicates": sum(len(e.duplicates) for f in layout.files for e in f.entries),
            "broken_texts": sum(f.broken is not None for f in layout.files),
            "errors_checked": len(got.errors)}


# ---- tests ---------------------------------------------------------------------------------


def test_bad_neighbours_change_nothing(record_property: Any) -> None:
    counts = counter("test_bad_neighbours_change_nothing")
    kinds = counter("test_bad_neighbours_change_nothing: bad documents by kind")

    @settings(profile(), max_examples=FUZZ_EXAMPLES)
    @given(layout=directory())
    def run(layout: Layout) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            counts.update(check_layout(layout, Path(tmp)))
        kinds.update(b.what.split(" at ")[0] for b in layout.bad())

    run()
    for key, value in sorted(counts.items()):
        record_property(key, value)
    assert counts["directories"] >= min(FUZZ_EXAMPLES, 50)


@pytest.mark.parametrize("target", KNOWN_TARGETS + STRUCTURAL_TARGETS)
def test_every_corruption_among_neighbours(target: str) -> None:
    """Each corruption at least once per run, whatever the random draw above favoured."""
    counts = counter("test_every_corruption_among_neighbours")

    @settings(profile(), max_examples=2)
    @given(layout=directory(max_bad=3, target=target))
    def run(layout: Layout) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            counts.update(check_layout(layout, Path(tmp)))

    run()
    assert counts["directories"] >= 1


def test_ten_thousand_objects_in_one_file(tmp_path: Path, record_property: Any) -> None:
    """One file, 10,000 objects: every 97th invalid (a bad CIDR, name, port or type)."""
    docs: list[Any] = []
    bad: dict[int, tuple[str, str]] = {}  # doc index -> (name, field)
    for i in range(10_000):
        ns = f"ns-{i % 40}"
        if i % 3 == 0:
            doc: dict[str, Any] = {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork",
                                   "metadata": {"name": f"en-{i}", "namespace": ns},
                                   "spec": {"trafficPolicy": "Deny", "networks": [
                                       {"cidr": f"10.{i % 250}.{i // 250}.0/24", "except": [f"10.{i % 250}.{i // 250}.128/25"]}]}}
        else:
            doc = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                   "metadata": {"name": f"route-{i}", "namespace": ns},
                   "spec": {"parentRefs": [{"group": "policy.linkerd.io", "kind": "EgressNetwork",
                                            "name": f"en-{i - i % 3}", "port": 80}],
                            "hostnames": [f"h{i}.example.com"],
                            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": f"/p{i}"}}]}]}}
        if i % 97 == 0:
            variant = (i // 97) % 4
            if variant == 0 and doc["kind"] == "EgressNetwork":
                doc["spec"]["networks"][0]["cidr"] = "10.0.0.0/33"
                bad[i] = (doc["metadata"]["name"], "spec.networks[0].cidr")
            elif variant == 1:
                doc["metadata"]["name"] = f"Bad_Name-{i}"
                bad[i] = (doc["metadata"]["name"], "metadata.name")
            elif doc["kind"] == "HTTPRoute":
                doc["spec"]["parentRefs"][0]["port"] = "eighty"
                bad[i] = (doc["metadata"]["name"], "spec.parentRefs[0].port")
            else:
                doc["spec"]["trafficPolicy"] = ["Deny"]
                bad[i] = (doc["metadata"]["name"], "spec.trafficPolicy")
        docs.append(doc)
    path = tmp_path / "ten-thousand.yaml"
    path.write_text(yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False))

    started = time.perf_counter()
    result = load_paths([tmp_path])
    seconds = time.perf_counter() - started

    assert sorted((e.name, e.field) for e in result.errors) == sorted(bad.values())
    assert all(e.file == str(path) and e.kind in ("EgressNetwork", "HTTPRoute") and e.namespace.startswith("ns-")
               for e in result.errors)
    want = [(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for i, d in enumerate(docs) if i not in bad]
    assert [tuple(o.key) for o in result.objects] == want
    print(f"10,000 objects ({path.stat().st_size} bytes, {len(bad)} invalid) loaded in {seconds:.2f} s")
    record_property("objects_loaded", len(result.objects))
    record_property("errors", len(result.errors))
    record_property("load_seconds", round(seconds, 2))
    counter("test_ten_thousand_objects_in_one_file").update(
        {"objects": len(docs), "invalid": len(bad), "load_ms": round(seconds * 1000)})


def test_thousands_of_cidrs(tmp_path: Path, record_property: Any) -> None:
    """A valid EgressNetwork with 2,000 networks loads whole; one with a single bad entry among
    4,000 is rejected naming that entry; the big one still translates (time recorded; the
    translation of thousands of CIDRs is superlinear, so it is timed on 300)."""
    nets = [{"cidr": f"2001:db8:{i:x}::/48", "except": [f"2001:db8:{i:x}:1::/64"]} for i in range(2000)]
    big: dict[str, Any] = {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork",
           "metadata": {"name": "big", "namespace": "app"}, "spec": {"trafficPolicy": "Deny", "networks": nets}}
    broken = copy.deepcopy(big)
    broken["metadata"]["name"] = "broken"
    broken["spec"]["networks"] = nets + nets
    broken["spec"]["networks"][3217] = {"cidr": "2001:db8:zz::/48"}
    (tmp_path / "big.yaml").write_text(yaml.safe_dump_all([big, broken]))
    started = time.perf_counter()
    result = load_paths([tmp_path])
    load_s = time.perf_counter() - started
    assert [o.name for o in result.objects] == ["big"]
    assert len(result.objects[0].spec.networks) == 2000  # type: ignore[attr-defined]
    assert [(e.name, e.field) for e in result.errors] == [("broken", "spec.networks[3217].cidr")]
    assert "'2001:db8:zz::/48' is not a valid IP network" in result.errors[0].message

    small = copy.deepcopy(big)
    small["spec"]["networks"] = nets[:300]
    started = time.perf_counter()
    translator = Translator()
    translator.load(parse_text(yaml.safe_dump(small), "small.yaml").objects)
    listeners = dump(translator.resources("app"))["listeners"]
    translate_s = time.perf_counter() - started
    assert listeners and listeners[0]["filter_chains"]
    verdict = translator.explain("app", "2001:db8:5::9", 80)
    assert verdict["egress_network"] == "app/big" and verdict["action"] == "deny"
    assert translator.explain("app", "2001:db8:5:1::9", 80)["egress_network"] != "app/big"  # an except
    print(f"2,000 CIDRs loaded in {load_s:.2f} s; 300 CIDRs translated in {translate_s:.2f} s")
    record_property("load_2000_cidrs_seconds", round(load_s, 2))
    record_property("translate_300_cidrs_seconds", round(translate_s, 2))


@settings(profile(), max_examples=100)
@given(entry=network_entry())
def test_generated_networks_are_valid(entry: dict[str, Any]) -> None:
    """The generator of valid CIDRs only makes what the loader accepts (else the fuzz above
    would test nothing but rejections)."""
    doc = {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork",
           "metadata": {"name": "n", "namespace": "app"}, "spec": {"trafficPolicy": "Allow", "networks": [entry]}}
    result = parse_text(yaml.safe_dump(doc), "n.yaml")
    assert not result.errors and len(result.objects) == 1
    counter("test_generated_networks_are_valid")["networks"] += 1


# ---- regressions: bugs this fuzzing found ---------------------------------------------------

EN = ("apiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\n"
      "metadata: {{name: {name}, namespace: app}}\nspec: {{trafficPolicy: Allow}}\n")


def _bomb_text(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "{" + ", ".join(lines) + "}"


@pytest.mark.parametrize(("case", "text", "field", "message"), [
    # RecursionError escaped parse_text: a List whose items hold the List itself.
    ("recursive List", "&l {apiVersion: v1, kind: List, items: [*l]}\n", "items[0]", "refers to itself"),
    # str() of the name expanded 9**9 strings: seconds of CPU and gigabytes before the error.
    ("billion laughs in metadata.name",
     "apiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\nx: " + _bomb_text(9)
     + "\nmetadata: {name: *a8, namespace: app}\nspec: {trafficPolicy: Allow}\n", "x.a8", "YAML aliases expand"),
    ("recursive metadata.name",
     "apiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\nmetadata: {name: &n [*n], namespace: app}\n"
     "spec: {trafficPolicy: Allow}\n", "metadata.name[0]", "refers to itself"),
    # A self-referencing value in a field the model keeps as Any (backendRef filters).
    ("recursive backendRef filter",
     "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: app}\n"
     "spec: {rules: [{backendRefs: [{name: s, port: 80, filters: [&f {type: X, x: [*f]}]}]}]}\n",
     "spec.rules[0].backendRefs[0].filters[0].x[0]", "refers to itself"),
    # An unquoted bad date was a ValueError that rejected the file from there on, no field.
    ("bad unquoted timestamp", EN.format(name="t").replace("namespace: app", "namespace: app, creationTimestamp: 2024-13-45"),
     "metadata.creationTimestamp", "month"),
])
def test_hostile_documents_are_errors_naming_the_field(case: str, text: str, field: str, message: str) -> None:
    started = time.perf_counter()
    result = parse_text(EN.format(name="before") + "---\n" + text + "---\n" + EN.format(name="after"), "h.yaml")
    assert time.perf_counter() - started < 2, "hostile input must be refused before it is expanded"
    assert [o.name for o in result.objects] == ["before", "after"], case
    (error,) = result.errors
    assert error.field == field and message in error.message, str(error)
    assert len(str(error)) < 500


def test_deep_json_is_a_parse_error() -> None:
    # RecursionError escaped parse_text: json's decoder on 100,000 nested arrays.
    result = parse_text("[" * 100_000 + "]" * 100_000, "deep.json")
    assert [e.message for e in result.errors] == ["cannot parse: nested too deeply"]


def test_many_bad_list_items_cost_one_pass() -> None:
    """2,000 self-referencing items and 2,000 that alias one 400-value block: each cycle is
    refused, and the aliases once they expand the List by more than the limit, naming the
    field that holds the alias."""
    cycles = ", ".join(f"&c{i} {{kind: EgressNetwork, x: [*c{i}]}}" for i in range(2000))
    block = "{" + ", ".join(f"k{i}: [a, b]" for i in range(100)) + "}"
    shared = (f"{{apiVersion: policy.linkerd.io/v1alpha1, kind: EgressNetwork, metadata: {{name: s0, namespace: app}}, "
              f"spec: {{trafficPolicy: Allow, x: &b {block}}}}}, "
              + ", ".join(f"{{apiVersion: policy.linkerd.io/v1alpha1, kind: EgressNetwork, metadata: {{name: s{i}, "
                          f"namespace: app}}, spec: {{trafficPolicy: Allow, x: *b}}}}" for i in range(1, 2000)))
    started = time.perf_counter()
    result = parse_text(f"apiVersion: v1\nkind: List\nitems: [{cycles}, {shared}]\n", "many.yaml")
    assert time.perf_counter() - started < 10
    refused_cycles = [e for e in result.errors if "refers to itself" in e.message]
    refused_aliases = [e for e in result.errors if "YAML aliases expand it" in e.message]
    assert len(refused_cycles) == 2000 and all(e.field == "x[0]" for e in refused_cycles)
    # each alias adds the block's 401 values: the first 100,000 // 401 of them fit
    assert len(result.objects) == 1 + 100_000 // 401 and len(result.objects) + len(refused_aliases) == 2000
    assert {(e.name, e.field) for e in refused_aliases[:1]} == {(f"s{len(result.objects)}", "spec.x")}
    assert [o.name for o in result.objects] == [f"s{i}" for i in range(len(result.objects))]


def test_a_billion_laughs_list_item_is_refused_alone() -> None:
    items = ", ".join(f"{{apiVersion: policy.linkerd.io/v1alpha1, kind: EgressNetwork, metadata: {{name: n{i}, "
                      f"namespace: app}}, spec: {{trafficPolicy: Allow}}}}" for i in range(2))
    text = (f"apiVersion: v1\nkind: List\nitems: [{items}, {{apiVersion: policy.linkerd.io/v1alpha1, "
            f"kind: EgressNetwork, metadata: {{name: bomb, namespace: app}}, spec: {{trafficPolicy: Allow, x: {_bomb_text(9)}}}}}]\n")
    result = parse_text(text, "list.yaml")
    assert [o.name for o in result.objects] == ["n0", "n1"]
    assert [(e.kind, e.namespace, e.name, e.field) for e in result.errors] == [
        ("EgressNetwork", "app", "bomb", "spec.x.a8")]


@pytest.mark.parametrize("broken", BROKEN_TEXTS, ids=[b[0] for b in BROKEN_TEXTS])
def test_broken_text_loses_nothing_before_it(tmp_path: Path, broken: tuple[str, bytes]) -> None:
    # NUL/escape bytes and invalid UTF-8 anywhere used to reject the whole file, including the
    # valid documents before them.
    path = tmp_path / "f.yaml"
    path.write_bytes(EN.format(name="first").encode() + b"---\n" + EN.format(name="second").encode()
                     + b"---\n" + broken[1])
    result = load_file(path)
    assert [o.name for o in result.objects] == ["first", "second"]
    (error,) = result.errors
    assert (error.kind, error.name, error.field) == ("", "", "")
    assert error.message.startswith(("cannot parse", "cannot read")), error.message


def test_over_long_values_are_cut_short_in_errors() -> None:
    name = "Ü" * 100_000
    result = parse_text(EN.format(name=name), "long.yaml")
    (error,) = result.errors
    assert error.field == "metadata.name" and error.name == name[:256] + "..."
    assert len(str(error)) < 1000 and "(100000 characters)" in error.message


@pytest.mark.parametrize("special", ["fifo", "dev-zero", "dangling", "loop"])
def test_special_files_are_errors_not_hangs(tmp_path: Path, special: str) -> None:
    # A FIFO named like a manifest blocked the reader (and so serve's reload) forever;
    # a link to /dev/zero read until memory ran out.
    path = tmp_path / "special.yaml"
    if special == "fifo":
        os.mkfifo(path)
    elif special == "dev-zero":
        path.symlink_to("/dev/zero")
    elif special == "dangling":
        path.symlink_to(tmp_path / "nowhere.yaml")
    else:
        path.symlink_to(path)
    (tmp_path / "ok.yaml").write_text(EN.format(name="ok"))
    started = time.perf_counter()
    result = load_paths([tmp_path])
    assert time.perf_counter() - started < 2
    assert [o.name for o in result.objects] == ["ok"]
    (error,) = result.errors
    assert error.file == str(path) and error.message.startswith("cannot read"), str(error)
