"""Load manifests into validated objects, collecting one clear error per rejected object.

In: file or directory paths (``load_paths``) or one file's text (``parse_text``).
Out: ``LoadResult``: the valid objects (deduplicated by kind/namespace/name, first definition
wins in sorted path order), the errors (file, kind, namespace, name, field, message) and
notices (skipped kinds). One bad document or object never hides the good ones.
Called by the CLI (translate, validate, explain) and by ``sources.files``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from egress_xds.model.objects import SUPPORTED, SUPPORTED_VERSIONS, ObjectKey, TopLevel

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


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


@dataclass
class LoadResult:
    objects: list[TopLevel] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

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
    # libyaml's C parser when PyYAML has it: about 10x faster on large manifests.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    yield from enumerate(yaml.load_all(text, Loader=loader))  # noqa: S506 (a safe loader)


def _flatten(doc: Any) -> Iterator[Any]:
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
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
    raw_meta = doc.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    name = str(meta.get("name", ""))
    namespace = str(meta.get("namespace", "default"))
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return None, LoadError(file, str(kind or ""), namespace, name, "apiVersion" if isinstance(kind, str) else "kind",
                               "apiVersion and kind are required strings"), None
    group, _, version = api_version.rpartition("/")
    model = SUPPORTED.get((group, kind))
    if model is None:
        return None, None, f"{file}: skipped {kind} {namespace}/{name} ({api_version} is not a kind egress-xds reads)"
    versions = SUPPORTED_VERSIONS[(group, kind)]
    if version not in versions:
        return None, LoadError(file, kind, namespace, name, "apiVersion",
                               f"{api_version} is not supported; use {', '.join(f'{group}/{v}'.lstrip('/') for v in versions)}"), None
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


def parse_text(text: str, file: str) -> LoadResult:
    """Parse one file's text. A syntax error rejects the documents from the error on."""
    result = LoadResult()
    try:
        for index, doc in _iter_documents(text, file):
            for item in _flatten(doc):
                obj, error, notice = parse_document(item, file)
                if obj is not None:
                    result.objects.append(obj)
                if error is not None:
                    if not error.name:  # nothing else identifies it: say which document
                        error = replace(error, message=f"document {index + 1}: {error.message}")
                    result.errors.append(error)
                if notice is not None:
                    result.notices.append(notice)
    except (yaml.YAMLError, json.JSONDecodeError, ValueError) as err:
        detail = str(err).replace("\n", " ")
        result.errors.append(LoadError(file, "", "", "", "", f"cannot parse: {detail}"))
    return result


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
    seen: dict[ObjectKey, str] = {}
    for result in per_file:
        merged.errors.extend(result.errors)
        merged.notices.extend(result.notices)
        for obj in result.objects:
            key = obj.key
            file = obj.source_file
            if key in seen:
                merged.errors.append(LoadError(file, key.kind, key.namespace, key.name, "metadata.name",
                                               f"duplicate: {key} is already defined in {seen[key]}; this definition is ignored"))
                continue
            seen[key] = file
            merged.objects.append(obj)
    return merged


def load_file(path: Path) -> LoadResult:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return LoadResult(errors=[LoadError(file, "", "", "", "", f"cannot read: {err}")])
    result = parse_text(text, file)
    for obj in result.objects:
        obj._source_file = file
    return result


def load_paths(paths: Iterable[str | os.PathLike[str]]) -> LoadResult:
    """Load every manifest below ``paths``."""
    return merge_results(load_file(p) for p in manifest_files(paths))
