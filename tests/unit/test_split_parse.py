"""A manifest file's result remembers which objects each document's text gave, and a changed
file is parsed document by document (``load_bytes`` with the previous result): unchanged
documents keep their objects, the result equals the whole-text parse, and every text a cut
could change, or that has an error, or that changed mostly, is parsed whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egress_xds.model import load as load_module
from egress_xds.model.load import (
    LoadResult,
    documents_of,
    load_bytes,
    parse_split,
    parse_text,
    split_documents,
)
from egress_xds.sources.files import FileSource
from tests.property.profiles import profile
from tests.unit.manifests import egress, http_route, to_yaml


def doc(obj: dict[str, Any]) -> str:
    return "---\n" + to_yaml([obj])


# Documents as users write them, each a piece of text that ends in a newline.
PIECES = [
    doc(egress("a", "app")),
    doc(egress("b", "app", policy="Allow", networks=["198.51.100.0/24"])),
    doc(http_route("r1", "app")),
    doc(http_route("r2", "app", port=8080)),
    "# a comment only\n",
    "---\n",  # an empty document
    "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: skipped, namespace: app}\n",  # a notice
    "---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: policy.linkerd.io/v1alpha1\n  kind: EgressNetwork\n"
    "  metadata: {name: in-list, namespace: app}\n  spec: {trafficPolicy: Allow}\n",
    "--- # after the marker\nbase: &b {trafficPolicy: Allow}\napiVersion: policy.linkerd.io/v1alpha1\n"
    "kind: EgressNetwork\nmetadata: {name: anchored, namespace: app}\nspec: *b\n",
    "---\napiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\nmetadata: {name: text, namespace: app}\n"
    "spec:\n  trafficPolicy: Deny\n  # ---- not a marker: indented\n",
]


def whole(text: str) -> LoadResult:
    return parse_text(text, "f.yaml")


def same(a: LoadResult, b: LoadResult) -> None:
    assert [o.model_dump() for o in a.objects] == [o.model_dump() for o in b.objects]
    assert a.notices == b.notices
    assert a.errors == b.errors


def test_every_sample_piece_parses_alone() -> None:
    for piece in PIECES:
        assert not whole(piece).errors, piece


@settings(profile(), max_examples=200)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=8, unique=True))
def test_a_split_parse_equals_the_whole_parse(pieces: list[str]) -> None:
    text = "".join(p if p.startswith("---") or i == 0 else "---\n" + p for i, p in enumerate(pieces))
    cut = split_documents(text)
    assert cut is not None
    split = parse_split(cut, "f.yaml", {})
    assert split is not None
    same(split, whole(text))
    again = parse_split(cut, "f.yaml", split.documents or {})
    assert again is not None
    assert all(a is b for a, b in zip(again.objects, split.objects, strict=True))
    # The whole-text parse pairs the same documents with the same objects.
    per_document: list[tuple[list[Any], list[str]]] = []
    parse_text(text, "f.yaml", per_document)
    paired = documents_of(cut, per_document)
    assert paired is not None and split.documents is not None
    assert list(paired) == list(split.documents)
    for piece, (objects, notices) in paired.items():
        assert [o.model_dump() for o in objects] == [o.model_dump() for o in split.documents[piece][0]]
        assert notices == split.documents[piece][1]


def test_editing_one_document_of_many_parses_that_document_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = [http_route(f"r{i}", "app") for i in range(200)]
    path = tmp_path / "all.yaml"
    path.write_text(to_yaml(docs))
    source = FileSource([tmp_path])
    read: list[dict[str, Any]] = []
    real = load_module._read_document
    monkeypatch.setattr(load_module, "_read_document", lambda doc, *a: read.append(doc) or real(doc, *a))
    source.scan()  # the first load parses the whole text and pairs documents with objects
    assert len(read) == 200
    for edit, (name, port) in enumerate([("r117", 8080), ("r42", 9090)]):
        before = {o.name: o for o in source.result().objects}
        documents = source.files[str(path)].parsed.documents or {}
        held = [o for objects, _notices in documents.values() for o in objects]
        assert len(held) == 200  # what the next split parse hands over is what is in force
        assert all(a is b for a, b in zip(held, source.result().objects, strict=True))
        read.clear()
        docs[int(name[1:])] = http_route(name, "app", port=port)
        path.write_text(to_yaml(docs))
        assert source.scan()
        assert [d["metadata"]["name"] for d in read] == [name], f"edit {edit}"
        after = {o.name: o for o in source.result().objects}
        assert [n for n in after if after[n] is not before[n]] == [name]
        assert after[name].spec.parentRefs[0].port == port  # type: ignore[attr-defined]
        same(source.result(), whole(to_yaml(docs)))


def test_a_text_that_mostly_changed_is_parsed_whole_and_paired_again(monkeypatch: pytest.MonkeyPatch) -> None:
    old = "".join(doc(http_route(f"r{i}", "app")) for i in range(10))
    new = "".join(doc(http_route(f"r{i}", "app", port=8000 + i)) for i in range(10))
    previous = load_bytes(old.encode(), "f.yaml")
    monkeypatch.setattr(load_module, "parse_split", lambda *a: pytest.fail("split parse of a rewritten file"))
    result = load_bytes(new.encode(), "f.yaml", previous)
    same(result, whole(new))
    assert result.documents is not None and list(result.documents) == split_documents(new)


def test_a_first_piece_without_a_document_is_paired_with_nothing() -> None:
    text = "# egress for team app\n\n" + PIECES[0] + PIECES[2]
    result = load_bytes(text.encode(), "f.yaml")
    assert result.documents is not None
    assert [len(objects) for objects, _ in result.documents.values()] == [0, 1, 1]
    bare = to_yaml([egress("bare", "app")]) + PIECES[2]  # a first document without ---
    result = load_bytes(bare.encode(), "f.yaml")
    assert result.documents is not None
    assert [[o.name for o in objects] for objects, _ in result.documents.values()] == [["bare"], ["r1"]]


@pytest.mark.parametrize("text", [
    "%YAML 1.2\n---\n" + PIECES[0],  # a directive
    PIECES[0] + "...\n" + PIECES[1].removeprefix("---\n"),  # an end marker, then a bare document
    PIECES[0] + PIECES[0],  # the same document twice (a duplicate to report)
])
def test_texts_a_cut_could_change_are_parsed_whole(text: str) -> None:
    assert split_documents(text) is None
    previous = load_bytes(text.encode(), "f.yaml")
    again = load_bytes(text.encode(), "f.yaml", previous)
    assert again.documents is None
    same(again, whole(text))


@pytest.mark.parametrize("bad", [
    "---\napiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\nmetadata: {name: x, namespace: app}\n"
    "spec: {trafficPolicy: Sometimes}\n",  # an invalid object
    "---\n- just\n- a list\n",  # a document that is no object
    "---\nkind: [oops\n",  # a syntax error: the line number is the whole text's
])
def test_a_text_with_an_error_gets_the_whole_parse_errors(bad: str) -> None:
    good = PIECES[0] + PIECES[2]
    previous = load_bytes(good.encode(), "f.yaml")
    assert previous.documents
    text = PIECES[0] + bad + PIECES[2]
    result = load_bytes(text.encode(), "f.yaml", previous)
    assert result.errors
    same(result, whole(text))


def test_documents_are_not_paired_when_the_counts_do_not_add_up() -> None:
    pieces = ["kind: A\n", "---\nkind: B\n"]
    assert documents_of(pieces, [([], [])]) is None  # the first piece holds a document: one is missing
    assert documents_of(pieces, [([], [])] * 3) is None
    assert documents_of(["# nothing\n", "---\nkind: B\n"], [([], ["n"])]) == {
        "# nothing\n": ((), ()), "---\nkind: B\n": ((), ("n",))}
