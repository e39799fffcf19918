"""Load manifests into validated objects, collecting one clear error per rejected object.

In: file or directory paths (``load_paths``) or one file's text (``parse_text``).
Out: ``LoadResult``: the valid objects (deduplicated by kind/namespace/name, first definition
wins in sorted path order), the errors (file, kind, namespace, name, field, message) and
notices (skipped kinds). One bad document or object never hides the good ones.
Called by the CLI (translate, validate, explain) and by ``sources.files``.

Hostile input is an error, never a crash or a hang: only regular files are read (a FIFO or
``/dev/zero`` behind a manifest name is refused); a document (or List item) that is nested more
than ``MAX_DEPTH`` levels deep, refers to itself through a YAML alias, or whose aliases expand it
by more than ``MAX_ALIAS_EXPANSION`` values ("billion laughs") is rejected naming the field,
before anything walks it; JSON nested too deeply for its decoder is a parse error. Unquoted
timestamps stay strings (as ``kubectl`` reads them), so a bad date is an error of its field,
not of the whole file. A forbidden character (NUL, a terminal escape) or invalid UTF-8 rejects
the documents from the one that holds it on, like a syntax error, not the whole file.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from egress_xds.model.objects import SUPPORTED, SUPPORTED_VERSIONS, ObjectKey, TopLevel

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

# Nesting that no manifest needs (an HTTPRoute header match is 8 levels deep).
MAX_DEPTH = 100
# Values that YAML aliases may add to one document beyond the values its text spells out.
MAX_ALIAS_EXPANSION = 100_000
# Longest kind/namespace/name copied from a rejected document into its error.
MAX_LABEL = 256

# A line that starts a YAML document: everything before it is whole documents.
_DOCUMENT_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)
_DOCUMENT_SPLIT = re.compile(r"^(?=---(?:[ \t\r\n]|$))", re.MULTILINE)
# What makes cutting a text at its ``---`` lines unsafe: a directive, a document end marker.
_SPLIT_BLOCKERS = re.compile(r"^(?:%|\.\.\.(?=[ \t\r\n]|$))", re.MULTILINE)

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# libyaml's C parser when PyYAML has it: about 10x faster on large manifests.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """The safe loader, minus implicit timestamps: ``2024-13-45`` stays a string that the
    field's validator rejects, instead of a ValueError that stops the whole file."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class LoadError:
    """A rejected document or object. ``field`` is a manifest path like ``spec.rules[0].matches``."""

    file: str
    kind: str
    namespace: str
    name: str
    field: str
    message: str

    def __str__(self) -> str:
        obj = f"{self.kind} {self.namespace}/{self.name}" if self.name else self.kind
        parts = [self.file, obj, f"field {self.field}" if self.field else "", self.message]
        return ": ".join(p for p in parts if p)

    def as_dict(self) -> dict[str, str]:
        return {
            "file": self.file,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "field": self.field,
            "message": self.message,
        }


# One file's documents as its last parse read them: document text -> (objects, notices) of
# that document, in file order (see ``load_bytes``).
Documents = dict[str, tuple[tuple[TopLevel, ...], tuple[str, ...]]]


@dataclass
class LoadResult:
    objects: list[TopLevel] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    # Set by ``load_bytes`` when the text could be cut into documents and had no error: the
    # next parse of the file reuses the objects of every document whose text is unchanged.
    documents: Documents | None = field(default=None, compare=False, repr=False)

    def extend(self, other: LoadResult) -> None:
        self.objects.extend(other.objects)
        self.errors.extend(other.errors)
        self.notices.extend(other.notices)


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = "except" if part == "except_" else part
            out += f".{name}" if out else name
    return out


def _iter_documents(text: str, file: str) -> Iterator[tuple[int, Any]]:
    """Yield (document index, decoded document); a syntax error raises ValueError."""
    if file.endswith(".json"):
        yield 0, json.loads(text)
        return
    yield from enumerate(yaml.load_all(text, Loader=_Loader))  # noqa: S506 (a safe loader)


class _Shape(Exception):
    def __init__(self, path: tuple[int | str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _is_list(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list)


class _Walker:
    """Measures decoded YAML: walks each distinct container once (shared ones are aliases),
    so a billion-laughs document costs the size of its text, not of its expansion."""

    def __init__(self) -> None:
        # id(container) -> (values below it with aliases counted again, levels below it)
        self.seen: dict[int, tuple[int, int]] = {}
        self.active: set[int] = set()
        self.unique = 0  # values the text spells out
        self.total = 0  # values after expanding aliases, of what was accepted

    def walk(self, value: Any, path: tuple[int | str, ...]) -> int:
        """The expanded size of ``value``; raises _Shape on a cycle or excessive depth."""
        if not isinstance(value, dict | list | tuple):
            return 1
        key = id(value)
        if key in self.seen:
            size, height = self.seen[key]
            if len(path) + height > MAX_DEPTH:
                raise _Shape(path, f"is nested more than {MAX_DEPTH} levels deep")
            return size
        if key in self.active:
            raise _Shape(path, "refers to itself (a recursive YAML alias)")
        if len(path) >= MAX_DEPTH:
            raise _Shape(path, f"is nested more than {MAX_DEPTH} levels deep")
        self.active.add(key)
        try:
            size, height = 1, 1
            self.unique += 1
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for name, child in items:
                extra = 1 if isinstance(value, dict) else 0  # the key
                size += extra + self.walk(child, (*path, name))
                if isinstance(child, dict | list | tuple):
                    height = max(height, 1 + self.seen[id(child)][1])
                else:
                    self.unique += 1
                self.unique += extra
        finally:
            self.active.discard(key)
        self.seen[key] = (size, height)
        return size

    def check(self, value: Any, path: tuple[int | str, ...]) -> tuple[tuple[int | str, ...], str] | None:
        """Walk ``value`` (a document, or an item of a List at ``path``) and account for it;
        (path, problem) if it must be refused."""
        unique = self.unique  # what a refused value spelled out does not count
        try:
            size = self.walk(value, path)
        except _Shape as err:
            self.unique = unique
            return err.path, err.message
        if self.total + size - self.unique <= MAX_ALIAS_EXPANSION:
            self.total += size
            return None
        self.unique = unique
        # Name the field holding the expansion: down the mappings, while one child holds most
        # of the expanded values.
        node = value
        while isinstance(node, dict) and node:
            name, child = max(node.items(), key=lambda kv: self.seen.get(id(kv[1]), (1, 0))[0])
            if 2 * self.seen.get(id(child), (1, 0))[0] <= self.seen.get(id(node), (1, 0))[0]:
                break
            path, node = (*path, name), child
        return path, (f"YAML aliases expand it to {self.seen.get(id(node), (1, 0))[0]} values: the "
                      f"document would hold more than {MAX_ALIAS_EXPANSION} values beyond what its "
                      f"text spells out; refusing it")


def _screen(doc: Any) -> tuple[Any, list[tuple[Any, str, str]]]:
    """Split ``doc`` into what may be parsed and what is refused for its shape (a cycle, too
    deep, too many aliases): (the document, a List without its refused items, or None;
    [(refused document or item, field, message)]). Only the offending items of a List are
    refused; the walk is shared, so it costs one pass over the document."""
    walker = _Walker()

    def field(path: tuple[int | str, ...]) -> str:
        return _loc_to_path(path[:12]) + ("..." if len(path) > 12 else "")

    if not _is_list(doc):
        problem = walker.check(doc, ())
        return (doc, []) if problem is None else (None, [(doc, field(problem[0]), problem[1])])
    kept: list[Any] = []
    refused: list[tuple[Any, str, str]] = []
    for item in doc["items"]:
        problem = walker.check(item, ())
        if problem is None:
            kept.append(item)
        else:
            refused.append((item, field(problem[0]), problem[1]))
    return ({**doc, "items": kept} if refused else doc), refused


def _label(value: Any) -> str:
    """A kind/namespace/name fit to identify a rejected document: scalars only, bounded."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    text = str(value)
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL] + "..."


def _identity(doc: dict[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name) of a document, as far as it has plain values for them."""
    raw_meta = doc.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    return _label(doc.get("kind")), _label(meta.get("namespace", "default")), _label(meta.get("name", ""))


def _flatten(doc: Any) -> Iterator[Any]:
    if _is_list(doc):
        for item in doc["items"]:
            yield from _flatten(item)
    elif doc is not None:
        yield doc


def parse_document(doc: Any, file: str) -> tuple[TopLevel | None, LoadError | None, str | None]:
    """One decoded document -> (object, error, notice); exactly one of the three is set."""
    if not isinstance(doc, dict):
        return None, LoadError(file, "", "", "", "", f"document is a {type(doc).__name__}, not an object"), None
    kind = doc.get("kind")
    api_version = doc.get("apiVersion")
    _, namespace, name = _identity(doc)
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return None, LoadError(file, _label(kind), namespace, name, "apiVersion" if isinstance(kind, str) else "kind",
                               "apiVersion and kind are required strings"), None
    group, _, version = api_version.rpartition("/")
    model = SUPPORTED.get((group, kind))
    if model is None:
        return None, None, (f"{file}: skipped {_label(kind)} {namespace}/{name} "
                            f"({_label(api_version)} is not a kind egress-xds reads)")
    versions = SUPPORTED_VERSIONS[(group, kind)]
    if version not in versions:
        return None, LoadError(file, kind, namespace, name, "apiVersion",
                               f"{_label(api_version)} is not supported; use {', '.join(f'{group}/{v}'.lstrip('/') for v in versions)}"), None
    try:
        obj = model.model_validate(doc)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        more = len(err.errors()) - 1
        message = first["msg"].removeprefix("Value error, ")
        if more:
            message += f" (and {more} more error{'s' if more > 1 else ''})"
        return None, LoadError(file, kind, namespace, name, _loc_to_path(tuple(first["loc"])), message), None
    return obj, None, None


def _documents_before(text: str, index: int) -> str:
    """The whole documents of ``text`` that end before ``index`` (up to its last ``---``)."""
    starts = [m.start() for m in _DOCUMENT_START.finditer(text, 0, index)]
    return text[:starts[-1]] if starts else ""


def _read_document(doc: Any, file: str, aliases: bool) -> tuple[list[TopLevel], list[LoadError], list[str]]:
    """One decoded YAML document -> (objects, errors, notices)."""
    objects: list[TopLevel] = []
    notices: list[str] = []
    refused: list[tuple[Any, str, str]] = []
    if aliases:
        doc, refused = _screen(doc)
    errors = [_shape_error(item, file, field, message) for item, field, message in refused]
    for item in _flatten(doc):
        obj, error, notice = parse_document(item, file)
        if obj is not None:
            objects.append(obj)
        if error is not None:
            errors.append(error)
        if notice is not None:
            notices.append(notice)
    return objects, errors, notices


def parse_text(text: str, file: str, per_document: list[tuple[list[TopLevel], list[str]]] | None = None
               ) -> LoadResult:
    """Parse one file's text. A syntax error rejects the documents from the error on.
    ``per_document``, when given, gets each document's (objects, notices) in order."""
    result = LoadResult()
    # Aliases need an anchor ("&name"): without one a document is a tree no bigger than its
    # text, nested at most 1000 levels (libyaml's limit), and the walk is skipped.
    aliases = not file.endswith(".json") and "&" in text
    try:
        for index, doc in _iter_documents(text, file):
            objects, errors, notices = _read_document(doc, file, aliases)
            if per_document is not None:
                per_document.append((objects, notices))
            result.objects += objects
            result.notices += notices
            for error in errors:
                if not error.name:  # nothing else identifies it: say which document
                    error = replace(error, message=f"document {index + 1}: {error.message}")
                result.errors.append(error)
    except yaml.reader.ReaderError as err:
        # A character YAML forbids (a NUL, an ANSI escape). libyaml checks a whole buffer
        # before the first document is parsed: parse again the documents before that one.
        bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
        prefix = _documents_before(text, bad.start()) if bad else ""
        result = parse_text(prefix, file) if prefix else LoadResult()
        detail = str(err).replace("\n", " ")
        result.errors.append(LoadError(file, "", "", "", "", f"cannot parse: {detail}"))
    except (yaml.YAMLError, json.JSONDecodeError, ValueError) as err:
        detail = str(err).replace("\n", " ")
        result.errors.append(LoadError(file, "", "", "", "", f"cannot parse: {detail}"))
    except RecursionError:  # json's decoder on thousands of nested brackets
        result.errors.append(LoadError(file, "", "", "", "", "cannot parse: nested too deeply"))
    return result


def split_documents(text: str) -> list[str] | None:
    """``text`` cut before each ``---`` line, or None when cutting could change what it
    means or the documents are not all different: directives (``%YAML``, ``%TAG``) and
    ``...`` end markers reach across the cut. A ``---`` at the start of a line ends any
    scalar or collection before it, so every piece is parsed as it is in the whole text."""
    if _SPLIT_BLOCKERS.search(text):
        return None
    pieces = [piece for piece in _DOCUMENT_SPLIT.split(text) if piece]
    return pieces if len(set(pieces)) == len(pieces) else None


def documents_of(pieces: list[str], per_document: list[tuple[list[TopLevel], list[str]]]) -> Documents | None:
    """The ``Documents`` of a whole-text parse without errors: each piece of
    ``split_documents`` paired with the document it holds. A piece that starts with ``---``
    holds exactly one document; the first piece may hold none (comments, blank lines),
    which is checked; any other count means no pairing (None)."""
    if len(per_document) == len(pieces) - 1 and pieces and not pieces[0].startswith("---"):
        try:
            if list(yaml.load_all(pieces[0], Loader=_Loader)):  # noqa: S506 (a safe loader)
                return None
        except yaml.YAMLError:
            return None
        per_document = [([], []), *per_document]
    if len(per_document) != len(pieces):
        return None
    return {piece: (tuple(objects), tuple(notices))
            for piece, (objects, notices) in zip(pieces, per_document, strict=True)}


def parse_split(pieces: list[str], file: str, previous: Documents) -> LoadResult | None:
    """Parse a text's ``pieces`` (``split_documents``) one by one, reusing ``previous``'s
    objects and notices for every piece whose text is unchanged; None when a document has
    any error, which only the whole-text parse reports exactly (line numbers, document
    numbers, documents after a syntax error)."""
    result = LoadResult(documents={})
    assert result.documents is not None
    for piece in pieces:
        known = previous.get(piece)
        if known is None:
            objects: list[TopLevel] = []
            notices: list[str] = []
            try:
                for doc in yaml.load_all(piece, Loader=_Loader):  # noqa: S506 (a safe loader)
                    found, errors, said = _read_document(doc, file, "&" in piece)
                    if errors:
                        return None
                    objects += found
                    notices += said
            except (yaml.YAMLError, ValueError, RecursionError):
                return None
            known = (tuple(objects), tuple(notices))
        result.documents[piece] = known
        result.objects += known[0]
        result.notices += known[1]
    return result


def _shape_error(doc: Any, file: str, field: str, message: str) -> LoadError:
    """The error of a document (or List item) that ``_screen`` refused."""
    kind, namespace, name = _identity(doc) if isinstance(doc, dict) else ("", "", "")
    return LoadError(file, kind, namespace, name, field, message)


def manifest_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named directly, and manifest files below directories, in sorted order.

    Hidden entries (``.git``, Kubernetes ConfigMap ``..data``/``..2024_...`` directories) are
    skipped; the visible symlinks that point into them are followed, so a ConfigMap mount is
    read once.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, names in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if not name.startswith(".") and name.endswith(MANIFEST_SUFFIXES):
                        files.append(Path(root) / name)
        else:
            files.append(path)
    return files


def merge_results(per_file: Iterable[LoadResult]) -> LoadResult:
    """Combine per-file results; a second definition of the same object is an error."""
    merged = LoadResult()
    seen: dict[ObjectKey, TopLevel] = {}
    for result in per_file:
        merged.errors.extend(result.errors)
        merged.notices.extend(result.notices)
        for obj in result.objects:
            key = obj.key
            if key in seen:
                merged.errors.append(LoadError(obj.source_file, key.kind, key.namespace, key.name, "metadata.name",
                                               f"duplicate: {key} is already defined in {seen[key].source_file}; "
                                               "this definition is ignored"))
                continue
            seen[key] = obj
            merged.objects.append(obj)
    return merged


def read_regular_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is (a symlink to) a regular file; OSError otherwise.

    Opened non-blocking and checked after opening, so a FIFO never blocks the reader and a
    device (``/dev/zero``) is never read, even if it replaced the file after a ``stat``."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            return stream.read()
    finally:
        os.close(fd)


def unreadable(file: str, err: OSError) -> LoadResult:
    """The result of a file that cannot be read (every previous object of it stays in force)."""
    return LoadResult(errors=[LoadError(file, "", "", "", "", f"cannot read: {err}")])


def load_file(path: Path) -> LoadResult:
    try:
        raw = read_regular_file(path)
    except OSError as err:
        return unreadable(str(path), err)
    return load_bytes(raw, str(path))


def load_bytes(raw: bytes, file: str, previous: LoadResult | None = None) -> LoadResult:
    """Parse the bytes read from ``file``; the objects remember that file.

    The result remembers which objects each document's text gave (``documents``). With
    ``previous`` (the file's last result: it changed), when at least half the documents are
    unchanged, only the changed ones are parsed (``parse_split``) and the others keep their
    objects: an edit to one object of a file of thousands costs one document, not the file.
    Otherwise the whole text is parsed at once (one loader per file is ~14% faster over many
    documents); so is any text that has an error, or that cannot be cut into documents
    (``split_documents``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        # The documents before the one holding the bad byte are still read.
        valid = raw[:err.start].decode("utf-8")
        prefix = "" if file.endswith(".json") else _documents_before(valid, len(valid))
        result = parse_text(prefix, file) if prefix else LoadResult()
        result.errors.append(LoadError(file, "", "", "", "", f"cannot read: {err}"))
    else:
        pieces = None if file.endswith(".json") else split_documents(text)
        known = previous.documents if previous is not None else None
        split = None
        if pieces is not None and known and 2 * sum(piece in known for piece in pieces) >= len(pieces):
            split = parse_split(pieces, file, known)
        if split is not None:
            result = split
        else:
            per_document: list[tuple[list[TopLevel], list[str]]] = []
            result = parse_text(text, file, per_document)
            if pieces is not None and not result.errors:
                result.documents = documents_of(pieces, per_document)
    for obj in result.objects:
        obj._source_file = file
    return result


def load_paths(paths: Iterable[str | os.PathLike[str]]) -> LoadResult:
    """Load every manifest below ``paths``."""
    return merge_results(load_file(p) for p in manifest_files(paths))
