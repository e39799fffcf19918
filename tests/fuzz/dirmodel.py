"""A watched manifest directory under hostile changes, and a model of what must be in force.

In: hypothesis-drawn operation lists (``operations()``) on a small pool of paths: writes
(in place or atomic) of contents mixing valid EgressNetworks, invalid versions of them, invalid
names and a broken tail (syntax error, NUL bytes, invalid UTF-8); deletes; renames; a path
turned into a dangling symlink, a FIFO, a directory, or a symlink to another manifest; a file
written and deleted at once ("flash"); a file deleted between listing and reading, or
rewritten right after being read (both through ``Injector``, source level only).
Out: ``Directory.apply`` performs an operation on disk; ``Model`` replays the same operations
and says which objects (and which errors) a ``FileSource`` scan must report afterwards:
a file that cannot be read or parsed keeps its previous objects, an invalid object keeps its
previous version, duplicates go to the first path in sorted order.
Called by ``test_source_fuzz.py`` (``FileSource`` directly) and ``test_serve_fuzz.py`` (the
real ``serve`` process, with the writes made atomic where an intermediate state would matter).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from hypothesis import strategies as st

NAMES = ("n0", "n1", "n2", "n3")
NAMESPACE = "app"
PATHS = ("a.yaml", "b.yml", "c.json", "e.yaml", "sub/d.yaml")
TAILS = {  # YAML: appended after the documents (which still load); JSON: the whole file
    "broken": (b"kind: [unclosed\n", "cannot parse"),
    "binary": (b"\x00\x01binary\n", "cannot parse"),
    "utf8": (b"name: \xff\xfe\n", "cannot read"),
}

Item = tuple[str, str, str]  # ("ok", name, policy) | ("bad", name, "") | ("junk", "", "")
Obj = tuple[str, str]  # (name, trafficPolicy)
ErrorKey = tuple[str, str, str, str, str]  # (file, kind, namespace, name, field)


@dataclass(frozen=True)
class Content:
    items: tuple[Item, ...] = ()
    tail: str = ""

    @property
    def all_valid(self) -> bool:
        return not self.tail and all(kind == "ok" for kind, _, _ in self.items)


def en_doc(name: str, policy: str) -> dict[str, Any]:
    index = int(name[1:]) if name[1:].isdigit() else 7
    return {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"trafficPolicy": policy, "networks": [{"cidr": f"203.0.113.{index * 32}/27"}]}}


def item_doc(item: Item) -> dict[str, Any]:
    kind, name, policy = item
    if kind == "ok":
        return en_doc(name, policy)
    if kind == "bad":
        return en_doc(name, "Sometimes")
    return en_doc("Bad_Name", "Allow")


def fmt(path: str) -> str:
    """The format a file is written in, and read as: its name decides."""
    return ".json" if path.endswith(".json") else ".yaml"


def render(content: Content, suffix: str) -> bytes:
    docs = [item_doc(i) for i in content.items]
    if suffix == ".json":
        if content.tail:
            return b'{"apiVersion": "v1", "kind": "List", "items": [broken'
        doc = docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": docs}
        return json.dumps(doc).encode()
    text = "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs).encode()
    if content.tail:
        text += b"---\n" + TAILS[content.tail][0]
    return text


def parse_model(content: Content, written: str, read_as: str) -> tuple[list[Obj], list[tuple[str, str, str, str]], bool]:
    """(objects, errors as (kind, namespace, name, field), whether the file failed as a whole)
    for ``content`` written in format ``written`` and read as ``read_as`` (a rename can change
    a file's name from .yaml to .json: JSON text is YAML, YAML text is not JSON)."""
    if (written == ".json" and content.tail) or (read_as == ".json" and written != ".json"):
        return [], [("", "", "", "")], True
    objects: list[Obj] = []
    errors: list[tuple[str, str, str, str]] = []
    for kind, name, policy in content.items:
        if kind == "ok":
            objects.append((name, policy))
        elif kind == "bad":
            errors.append(("EgressNetwork", NAMESPACE, name, "spec.trafficPolicy"))
        else:
            errors.append(("EgressNetwork", NAMESPACE, "Bad_Name", "metadata.name"))
    if content.tail:
        errors.append(("", "", "", ""))
    return objects, errors, bool(content.tail)


# ---- operations ------------------------------------------------------------------------------

ITEMS = st.one_of(
    st.tuples(st.just("ok"), st.sampled_from(NAMES), st.sampled_from(["Allow", "Deny"])),
    st.tuples(st.just("ok"), st.sampled_from(NAMES), st.sampled_from(["Allow", "Deny"])),
    st.tuples(st.just("bad"), st.sampled_from(NAMES), st.just("")),
    st.just(("junk", "", "")),
)
CONTENTS = st.builds(Content, st.lists(ITEMS, max_size=4).map(tuple),
                     st.sampled_from(["", "", "", "broken", "binary", "utf8"]))
PATH = st.sampled_from(PATHS)

Op = tuple[Any, ...]


def operations(racy: bool, min_size: int = 1, max_size: int = 10) -> st.SearchStrategy[list[Op]]:
    ops = [
        st.tuples(st.just("write"), PATH, CONTENTS, st.booleans()),
        st.tuples(st.just("write"), PATH, CONTENTS, st.booleans()),
        st.tuples(st.just("delete"), PATH),
        st.tuples(st.just("rename"), PATH, PATH),
        st.tuples(st.just("dangling"), PATH),
        st.tuples(st.just("fifo"), PATH),
        st.tuples(st.just("mkdir"), PATH),
        st.tuples(st.just("link"), PATH, PATH),
        st.tuples(st.just("flash"), PATH, CONTENTS),
        st.tuples(st.just("storm"), PATH, st.lists(CONTENTS.filter(lambda c: c.all_valid), min_size=2, max_size=6)),
    ]
    if racy:
        ops += [st.tuples(st.just("racy_delete"), PATH), st.tuples(st.just("torn_write"), PATH, CONTENTS)]
    return st.lists(st.one_of(*ops), min_size=min_size, max_size=max_size)


# Run first, every time (hypothesis explicit examples): every kind of operation at least once.
EVERY_OPERATION: list[Op] = [
    ("write", "e.yaml", Content((("ok", "n3", "Deny"), ("bad", "n0", "")), "broken"), False),
    ("flash", "c.json", Content((("ok", "n1", "Allow"),))),
    ("storm", "b.yml", [Content((("ok", "n2", "Deny"),)), Content((("ok", "n2", "Allow"), ("ok", "n3", "Allow")))]),
    ("fifo", "a.yaml"),
    ("dangling", "b.yml"),
    ("link", "sub/d.yaml", "e.yaml"),
    ("mkdir", "a.yaml"),
    ("rename", "e.yaml", "c.json"),
    ("write", "b.yml", Content((("junk", "", ""), ("ok", "n1", "Deny")), "utf8"), True),
    ("write", "e.yaml", Content((("ok", "n0", "Allow"),), "binary"), False),
    ("delete", "sub/d.yaml"),
]
RACES: list[Op] = [
    ("racy_delete", "a.yaml"),
    ("torn_write", "b.yml", Content((("ok", "n3", "Deny"), ("ok", "n2", "Allow")))),
    ("link", "e.yaml", "b.yml"),
    ("torn_write", "b.yml", Content((("bad", "n3", ""),))),
    ("write", "a.yaml", Content((("ok", "n0", "Deny"),)), False),
    ("racy_delete", "a.yaml"),
]

BASELINE: dict[str, Content] = {
    "a.yaml": Content((("ok", "n0", "Allow"), ("ok", "n1", "Deny"))),
    "b.yml": Content((("ok", "n2", "Allow"),)),
}


# ---- the model -------------------------------------------------------------------------------


@dataclass
class Model:
    """What is on disk (per path: ("file", Content, format written in) | ("dangling",) |
    ("fifo",) | ("dir",) | ("link", target)) and what a scan keeps in force per path."""

    fs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    effective: dict[str, list[Obj]] = field(default_factory=dict)
    errors: dict[str, list[tuple[str, str, str, str]]] = field(default_factory=dict)

    def view(self, path: str, depth: int = 0) -> tuple[Any, ...] | None:
        """How the loader sees ``path``: ("content", Content, format) / ("unreadable",) / None
        (not a manifest file: absent, a directory or a symlink to one)."""
        entry = self.fs.get(path)
        if entry is None:
            return None if depth == 0 else ("unreadable",)
        if entry[0] == "file":
            return ("content", entry[1], entry[2])
        if entry[0] == "dir":
            return None
        if entry[0] == "link":
            target = self.fs.get(entry[1])
            if target is not None and target[0] == "dir":
                return None
            if depth > 5:
                return ("unreadable",)
            return self.view(entry[1], depth + 1)
        return ("unreadable",)

    def scan(self, unreadable: frozenset[str] = frozenset()) -> None:
        effective: dict[str, list[Obj]] = {}
        errors: dict[str, list[tuple[str, str, str, str]]] = {}
        for path in self.fs:
            view = self.view(path)
            if view is None:
                continue
            objects: list[Obj]
            if view[0] == "unreadable" or path in unreadable:
                objects, errs, failed = [], [("", "", "", "")], True
            else:
                objects, errs, failed = parse_model(view[1], view[2], fmt(path))
            previous = self.effective.get(path)
            if previous is not None:
                defined = {name for name, _ in objects}
                failed_names = {name for kind, _, name, _ in errs if kind}
                objects = objects + [o for o in previous if o[0] not in defined and (failed or o[0] in failed_names)]
            effective[path] = objects
            errors[path] = errs
        self.effective, self.errors = effective, errors

    def expected(self, root: Path) -> tuple[list[tuple[str, str, str]], list[ErrorKey]]:
        """(objects in force as (file, name, policy), errors) after merging in path order."""
        objects: list[tuple[str, str, str]] = []
        errors: list[ErrorKey] = []
        seen: set[str] = set()
        for path in sorted(self.effective, key=lambda p: str(root / p)):
            file = str(root / path)
            errors.extend((file, *e) for e in self.errors[path])
            for name, policy in self.effective[path]:
                if name in seen:
                    errors.append((file, "EgressNetwork", NAMESPACE, name, "metadata.name"))
                    continue
                seen.add(name)
                objects.append((file, name, policy))
        return objects, sorted(errors)

    def docs(self, root: Path) -> list[dict[str, Any]]:
        """The objects in force, as manifests (for an expected translation)."""
        objects, _ = self.expected(root)
        return [en_doc(name, policy) for _, name, policy in objects]

    def views(self) -> dict[str, tuple[Any, ...]]:
        """What a scan would read, per listed path (to tell whether an operation changed
        anything a ``FileSource`` sees)."""
        out = {}
        for path in self.fs:
            view = self.view(path)
            if view is not None:
                out[path] = view if view[0] == "unreadable" else ("content", render(view[1], view[2]), fmt(path))
        return out

    # What operations do to the model (mirrors Directory.apply; invalid ones are no-ops).

    def apply(self, op: Op) -> None:
        kind = op[0]
        if kind in ("write", "torn_write"):
            self._replace(op[1], ("file", op[2], fmt(op[1])))
        elif kind == "storm":
            self._replace(op[1], ("file", op[2][-1], fmt(op[1])))
        elif kind in ("delete", "flash", "racy_delete") and self._is_entry(op[1]):
            del self.fs[op[1]]
        elif kind == "rename" and self.renamable(op[1], op[2]):
            self.fs[op[2]] = self.fs.pop(op[1])
        elif kind in ("dangling", "fifo"):
            self._replace(op[1], (kind,))
        elif kind == "mkdir":
            self.fs[op[1]] = ("dir",)
        elif kind == "link" and self.linkable(op[1], op[2]):
            self.fs[op[1]] = ("link", op[2])

    def _is_entry(self, path: str) -> bool:
        return path in self.fs

    def _replace(self, path: str, entry: tuple[Any, ...]) -> None:
        if self.fs.get(path, ("",))[0] == "dir":
            return  # a write onto a directory fails; nothing changes
        self.fs[path] = entry

    def renamable(self, src: str, dst: str) -> bool:
        if src == dst or src not in self.fs:
            return False
        return self.fs[src][0] != "dir" and self.fs.get(dst, ("",))[0] != "dir"

    def linkable(self, path: str, target: str) -> bool:
        return (path != target and self.fs.get(target, ("",))[0] == "file"
                and self.fs.get(path, ("",))[0] != "dir")


class Directory:
    """The real directory the model describes."""

    def __init__(self, root: Path, model: Model, atomic_when_it_matters: bool = False) -> None:
        self.root = root
        self.model = model
        # serve scans whenever it likes: a write whose in-between states would change what
        # is kept (an invalid content written in place is briefly an empty, valid file) is
        # then done atomically, as editors and ConfigMap updates do.
        self.atomic_when_it_matters = atomic_when_it_matters
        (root / "sub").mkdir(parents=True, exist_ok=True)
        self._tmp = 0

    def path(self, name: str) -> Path:
        return self.root / name

    def _temp(self, name: str) -> Path:
        self._tmp += 1
        return self.path(name).parent / f".tmp-{self._tmp}"

    def _remove(self, path: Path) -> None:
        if path.is_symlink() or path.exists():
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()

    def _swap_in(self, name: str, make: Any) -> None:
        """Create the new entry under a hidden name, then rename it over ``name``."""
        tmp = self._temp(name)
        make(tmp)
        os.replace(tmp, self.path(name))

    def write(self, name: str, content: Content, atomic: bool) -> None:
        data = render(content, fmt(name))
        if self.path(name).is_dir() and not self.path(name).is_symlink():
            return
        if atomic or (self.atomic_when_it_matters and not content.all_valid):
            self._swap_in(name, lambda p: p.write_bytes(data))
        else:
            path = self.path(name)
            if path.is_symlink() or (path.exists() and not path.is_file()):
                self._remove(path)  # in place through a link, or into a FIFO, is another story
            with open(path, "wb") as stream:  # truncate, then write
                stream.write(data[:len(data) // 2])
                stream.flush()
                stream.write(data[len(data) // 2:])

    def apply(self, op: Op) -> None:
        """Perform ``op`` on disk and in the model."""
        kind = op[0]
        model = self.model
        if kind == "write":
            self.write(op[1], op[2], op[3])
        elif kind in ("torn_write", "racy_delete"):
            raise ValueError(f"{kind} needs a scan in the middle: see test_source_fuzz")
        elif kind == "storm":  # rewritten in place, fast, ending with the last content
            for content in op[2]:
                self.write(op[1], content, False)
        elif kind == "delete" and model._is_entry(op[1]):
            self._remove(self.path(op[1]))
        elif kind == "flash":  # written and deleted at once, several times
            if not model._is_entry(op[1]):
                for _ in range(3):
                    self.write(op[1], op[2], False)
                    self.path(op[1]).unlink()
            else:
                self._remove(self.path(op[1]))
        elif kind == "rename" and model.renamable(op[1], op[2]):
            os.replace(self.path(op[1]), self.path(op[2]))
        elif kind == "dangling" and model.fs.get(op[1], ("",))[0] != "dir":
            self._swap_in(op[1], lambda p: p.symlink_to(self.root / "nowhere" / "x.yaml"))
        elif kind == "fifo" and model.fs.get(op[1], ("",))[0] != "dir":
            self._swap_in(op[1], os.mkfifo)
        elif kind == "mkdir":
            self._remove(self.path(op[1]))
            self.path(op[1]).mkdir()
        elif kind == "link" and model.linkable(op[1], op[2]):
            self._swap_in(op[1], lambda p: p.symlink_to(self.path(op[2])))
        model.apply(op)

    def reset(self, files: dict[str, Content]) -> None:
        for entry in sorted(self.root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if entry.name == "sub" and entry.parent == self.root:
                continue
            self._remove(entry)
        self.model.fs.clear()
        for name, content in files.items():
            self.write(name, content, True)
            self.model.fs[name] = ("file", content, fmt(name))


class Injector:
    """Faults in the middle of ``FileSource.scan``: the file read next is deleted just before
    it is read, or rewritten with half its bytes just after (a writer racing the reader)."""

    def __init__(self) -> None:
        import egress_xds.sources.files as files

        self.module = files
        self.real = files.read_regular_file

    @contextmanager
    def delete_before_read(self, path: Path) -> Iterator[None]:
        def read(p: Path) -> bytes:
            if Path(p) == path and (path.exists() or path.is_symlink()):
                path.unlink()
            return self.real(p)

        with mock.patch.object(self.module, "read_regular_file", read):
            yield

    @contextmanager
    def torn_after_read(self, path: Path) -> Iterator[None]:
        def read(p: Path) -> bytes:
            data = self.real(p)
            if Path(p) == path:
                with open(path, "r+b") as stream:  # the writer starts over: half of it so far
                    stream.truncate(0)
                    stream.write(data[:len(data) // 2])
            return data

        with mock.patch.object(self.module, "read_regular_file", read):
            yield
