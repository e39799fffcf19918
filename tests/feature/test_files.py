"""The manifest directory source: per-file parse cache, broken files, every kind of change."""

from __future__ import annotations

import os
from pathlib import Path

from egress_xds.sources.files import FileSource

NET = """\
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {{name: {name}, namespace: app}}
spec: {{trafficPolicy: {policy}}}
"""


def net(name: str, policy: str = "Allow") -> str:
    return NET.format(name=name, policy=policy)


def objects(source: FileSource) -> dict[str, str]:
    """name -> trafficPolicy of every EgressNetwork in force."""
    return {o.name: o.spec.trafficPolicy for o in source.result().objects}  # type: ignore[attr-defined]


def test_broken_file_keeps_its_previous_objects(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(net("a") + "---\n" + net("a2"))
    (tmp_path / "b.yaml").write_text(net("b"))
    source = FileSource([tmp_path])
    assert source.scan()
    assert objects(source) == {"a": "Allow", "a2": "Allow", "b": "Allow"}
    (tmp_path / "a.yaml").write_text("kind: [unclosed\n")
    (tmp_path / "b.yaml").write_text(net("b", "Deny"))
    assert source.scan()
    result = source.result()
    assert objects(source) == {"a": "Allow", "a2": "Allow", "b": "Deny"}
    assert [e.file for e in result.errors] == [str(tmp_path / "a.yaml")]
    assert "cannot parse" in result.errors[0].message
    assert any("keeping the previous" in n for n in result.notices)
    (tmp_path / "a.yaml").write_text(net("a", "Deny"))
    assert source.scan()
    assert objects(source) == {"a": "Deny", "b": "Deny"}
    assert not source.result().errors


def test_invalid_object_keeps_its_previous_version(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(net("a") + "---\n" + net("other"))
    source = FileSource([tmp_path])
    source.scan()
    (tmp_path / "a.yaml").write_text(net("a", "Sometimes") + "---\n" + net("other", "Deny"))
    source.scan()
    result = source.result()
    assert objects(source) == {"a": "Allow", "other": "Deny"}
    assert [(e.name, e.field) for e in result.errors] == [("a", "spec.trafficPolicy")]


def test_only_changed_files_are_parsed(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        (tmp_path / f"n{i}.yaml").write_text(net(f"n{i}"))
    source = FileSource([tmp_path])
    source.scan()
    caplog.clear()
    caplog.set_level("INFO", logger="egress_xds.sources.files")
    assert not source.scan()
    os.utime(tmp_path / "n1.yaml")  # touched, same bytes: not re-parsed
    assert not source.scan()
    (tmp_path / "n3.yaml").write_text(net("n3", "Deny"))
    assert source.scan()
    loaded = [r.file for r in caplog.records if r.getMessage() == "manifest file loaded"]  # type: ignore[attr-defined]
    assert loaded == [str(tmp_path / "n3.yaml")]


def test_delete_rename_atomic_save_and_configmap_swap(tmp_path: Path) -> None:
    source = FileSource([tmp_path])
    (tmp_path / "a.yaml").write_text(net("a"))
    source.scan()
    assert objects(source) == {"a": "Allow"}
    # Rename: same objects, new file name.
    (tmp_path / "a.yaml").rename(tmp_path / "renamed.yaml")
    assert source.scan()
    assert objects(source) == {"a": "Allow"}
    assert [o.source_file for o in source.result().objects] == [str(tmp_path / "renamed.yaml")]
    # Editor's atomic save: write a temporary file, rename over the original.
    tmp = tmp_path / ".renamed.yaml.swp"
    tmp.write_text(net("a", "Deny"))
    tmp.replace(tmp_path / "renamed.yaml")
    assert source.scan()
    assert objects(source) == {"a": "Deny"}
    # Delete.
    (tmp_path / "renamed.yaml").unlink()
    assert source.scan()
    assert objects(source) == {}
    # Kubernetes ConfigMap volume: visible symlinks -> ..data -> ..<timestamp>/ ; swap ..data.
    first = tmp_path / "..2026_01"
    first.mkdir()
    (first / "cm.yaml").write_text(net("cm"))
    (tmp_path / "..data").symlink_to("..2026_01")
    (tmp_path / "cm.yaml").symlink_to("..data/cm.yaml")
    assert source.scan()
    assert objects(source) == {"cm": "Allow"}
    second = tmp_path / "..2026_02"
    second.mkdir()
    (second / "cm.yaml").write_text(net("cm", "Deny"))
    (tmp_path / "..data_tmp").symlink_to("..2026_02")
    (tmp_path / "..data_tmp").replace(tmp_path / "..data")
    (first / "cm.yaml").unlink()
    first.rmdir()
    assert source.scan()
    assert objects(source) == {"cm": "Deny"}


def test_merged_result_after_any_sequence_of_edits_equals_a_full_merge(tmp_path: Path) -> None:
    """``result`` re-keys only changed files and concatenates when no key is defined twice;
    whatever the edits (duplicates appearing and going, files deleted, broken files), it
    must equal ``merge_results`` over every file's objects in force, in the same order."""
    import random

    from egress_xds.model.load import merge_results

    rng = random.Random(7)
    names = ["a.yaml", "b.yaml", "c.yaml", "d.yaml"]
    source = FileSource([tmp_path])
    duplicates_seen = 0
    for step in range(300):
        name = rng.choice(names)
        action = rng.random()
        if action < 0.15:
            (tmp_path / name).unlink(missing_ok=True)
        elif action < 0.2:
            (tmp_path / name).write_text("kind: [unclosed\n")
        else:
            chosen = rng.sample(["x", "y", "z", "w", "v"], rng.randint(0, 3))
            text = "---\n".join(net(n, rng.choice(["Allow", "Deny"])) for n in chosen)
            (tmp_path / name).write_text(text + f"# step {step}\n")
        source.scan()
        got = source.result()
        want = merge_results(source.files[k].effective for k in sorted(source.files))
        assert [id(o) for o in got.objects] == [id(o) for o in want.objects], step
        assert got.errors == want.errors, step
        assert got.notices == want.notices, step
        duplicates_seen += any("duplicate" in e.message for e in got.errors)
    assert duplicates_seen > 20  # both paths were taken many times


def test_scans_of_hinted_files_equal_full_scans(tmp_path: Path) -> None:
    """``hint`` (the watcher's events) lets a scan look only at the files named; after any
    sequence of writes, deletes, renames, nested and hidden directories and directly named
    files and symlinks, the result must equal that of a source that always scans in full."""
    import random

    root = tmp_path / "m"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    single = tmp_path / "single.yaml"
    single.write_text(net("single"))
    rng = random.Random(11)
    spots = [root / "a.yaml", root / "b.yml", root / "sub" / "c.json", root / ".hidden" / "h.yaml",
             root / "notes.txt", single, root / "sub" / "link.yaml"]
    source = FileSource([root, single])
    source.scan()
    full = FileSource([root, single])  # never hinted: lists every file on each scan
    full.scan()
    hinted = 0
    for step in range(200):
        path = rng.choice(spots)
        touched = [path]
        action = rng.random()
        if action < 0.2:
            path.unlink(missing_ok=True)
        elif action < 0.3 and path.exists():
            other = rng.choice([p for p in spots if p.parent == path.parent])
            path.rename(other)
            touched.append(other)
        elif action < 0.35:
            path.write_text("kind: [unclosed\n")
        elif action < 0.4 and (root / "sub").exists():  # a directory moved away, then back
            (root / "sub").rename(tmp_path / "sub-away")
            touched = [root / "sub"]
            source.hint([(None, str(p)) for p in touched])
            source.scan()
            full.scan()
            assert [o.key for o in source.result().objects] == [o.key for o in full.result().objects], step
            (tmp_path / "sub-away").rename(root / "sub")
        elif action < 0.45:  # a link whose content changes with events on its target only
            link = root / "sub" / "link.yaml"
            link.unlink(missing_ok=True)
            link.symlink_to(rng.choice(spots[:3]))
            touched = [link]
        else:
            body = net(f"n{rng.randint(0, 9)}", rng.choice(["Allow", "Deny"]))
            if path.suffix == ".json":
                body = '{"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork", ' \
                       f'"metadata": {{"name": "j{step}", "namespace": "app"}}, "spec": {{"trafficPolicy": "Deny"}}}}'
            path.write_text(body)
        source.hint([(None, str(p)) for p in touched])
        hinted += source._hints is not None and not source._full
        source.scan()
        full.scan()
        got, want = source.result(), full.result()
        assert [(o.key, o.model_dump()) for o in got.objects] == [(o.key, o.model_dump()) for o in want.objects], step
        assert [(e.file, e.message) for e in got.errors] == [(e.file, e.message) for e in want.errors], step
    assert hinted > 100  # most steps took the hinted path
