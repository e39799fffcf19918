"""Fuzzing the real ``egress-xds serve`` process with hostile manifest directory changes.

In: one ``serve`` subprocess watching a directory (ADS on a unix socket, debug endpoint on a
loopback port), one SotW ADS client in namespace ``app`` subscribed to clusters, listeners and
routes (it acks everything), and hypothesis-drawn sequences of ``dirmodel`` operations: valid
and invalid writes (in place or atomic), deletes, renames, dangling symlinks, FIFOs,
directories and symlinks where files were, files written and deleted at once several times,
bursts of in-place rewrites; ``dirmodel.EVERY_OPERATION`` (each kind once) always runs first.
Each sequence starts from the same baseline.
Out: after every operation, once serve settled: the process is alive and healthy,
``/debug/status`` lists exactly the model's errors (file, kind, namespace, name, field) and
objects, and the ADS client holds exactly the Envoy resources the translator makes from the
model's valid objects. At the end, serve logged no error and no exception. The number of
sequences and operations is printed in the terminal summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf.message import Message
from hypothesis import Phase, example, given, settings

from egress_xds.model.load import parse_document
from egress_xds.resources import CLUSTER, LISTENER, ROUTE
from egress_xds.translate import Translator
from tests.feature.feature_xds import AdsClient, node, unpack
from tests.property.profiles import profile

from .counts import counter
from .dirmodel import BASELINE, EVERY_OPERATION, NAMESPACE, Directory, Model, Op, operations

SERVE_EXAMPLES = 12
MAX_OPS = 8
SETTLE = 0.25  # no reload for this long after the state matched: serve is done with the change
TIMEOUT = 15.0
TYPES = (CLUSTER, LISTENER, ROUTE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def expected_resources(model: Model, root: Path) -> dict[str, dict[str, Message]]:
    objects = []
    for doc in model.docs(root):
        obj, error, _ = parse_document(doc, "model")
        assert obj is not None, error
        objects.append(obj)
    translator = Translator()
    translator.load(objects)
    resources = translator.resources(NAMESPACE)
    return {t: dict(resources.get(t, {})) for t in TYPES}


class Harness:
    """The serve process, its debug endpoint and one ADS client, driven from one loop."""

    def __init__(self, root: Path, workdir: Path) -> None:
        self.root = root
        self.socket = workdir / "ads.sock"
        self.debug = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "serve.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.session: aiohttp.ClientSession | None = None
        self.channel: grpc.aio.Channel | None = None
        self.client: AdsClient | None = None
        self.latest: dict[str, dict[str, Message]] = {}
        self.pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "egress_xds.cli", "serve", "--manifests", str(self.root),
                "--ads-listen", f"unix:{self.socket}", "--debug-listen", self.debug.removeprefix("http://"),
                "--log-level", "info", stdout=log, stderr=log)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        deadline = time.monotonic() + 30
        while True:
            self.alive()
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with self.session.get(self.debug + "/readyz") as r:
                    if r.status == 200:
                        break
            assert time.monotonic() < deadline, "serve never became ready\n" + self.log_tail()
            await asyncio.sleep(0.05)
        self.channel = grpc.aio.insecure_channel(f"unix:{self.socket}")
        self.client = AdsClient(self.channel)
        for type_url in TYPES:
            await self.client.send(node=node(NAMESPACE, "fuzz~app"), type_url=type_url, resource_names=["*"])
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        assert self.client is not None
        while True:
            response = await self.client.responses.get()
            self.latest[response.type_url] = {
                m.name: m for m in (unpack(item) for item in response.resources)}  # type: ignore[attr-defined]
            await self.client.ack(response, names=["*"])

    def alive(self) -> None:
        assert self.proc is not None
        assert self.proc.returncode is None, f"serve exited with {self.proc.returncode}\n" + self.log_tail()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def get(self, path: str) -> tuple[int, str]:
        assert self.session is not None
        async with self.session.get(self.debug + path) as r:
            return r.status, await r.text()

    async def reloads(self) -> float:
        _, text = await self.get("/metrics")
        match = re.search(r"^egress_xds_translation_seconds_count (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    async def settle(self, model: Model, step: str, changed: bool, before: float) -> None:
        """Wait until serve reloaded (if the change is one a scan sees), its status and the
        sidecar's config match the model, and no reload happened for ``SETTLE`` seconds."""
        want_objects, want_errors = model.expected(self.root)
        want_keys = sorted(("EgressNetwork", NAMESPACE, name) for _, name, _ in want_objects)
        want_resources = expected_resources(model, self.root)
        deadline = time.monotonic() + TIMEOUT
        stable_since, last_count = time.monotonic(), await self.reloads()
        while True:
            self.alive()
            code, health = await self.get("/healthz")
            assert code == 200, health
            count = await self.reloads()
            if count != last_count:
                stable_since, last_count = time.monotonic(), count
            _, text = await self.get("/debug/status")
            status = json.loads(text)
            errors = sorted((e["file"], e["kind"], e["namespace"], e["name"], e["field"]) for e in status["errors"])
            keys = sorted((o["kind"], o["namespace"], o["name"]) for o in status["objects"])
            config = {t: self.latest.get(t, {}) for t in TYPES}
            matched = errors == want_errors and keys == want_keys and config == want_resources
            if matched and (count > before or not changed) and time.monotonic() - stable_since >= SETTLE:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"serve did not settle after {step}\nreloads {before} -> {count} (changed: {changed})\n"
                    f"status errors {errors}\nwant errors   {want_errors}\nstatus objects {keys}\n"
                    f"want objects   {want_keys}\nconfig matches: {config == want_resources}\n"
                    f"disk: {model.fs}\n" + self.log_tail())
            await asyncio.sleep(0.03)

    async def episode(self, ops: list[Op], directory: Directory, counts: Any) -> None:
        model = directory.model
        before = await self.reloads()
        old = model.views()
        directory.reset(BASELINE)
        model.fs = dict(model.fs)
        model.effective, model.errors = {}, {}  # all valid: what was there before does not matter
        model.scan()
        await self.settle(model, "reset", model.views() != old, before)
        for op in ops:
            before = await self.reloads()
            old = model.views()
            directory.apply(op)
            model.scan()
            await self.settle(model, str(op), model.views() != old, before)
            counts[f"op_{op[0]}"] += 1
            counts["operations"] += 1
        counts["sequences"] += 1

    async def close(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        if self.client is not None:
            await self.client.close()
        if self.channel is not None:
            await self.channel.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def test_serve_survives_hostile_directory_changes(tmp_path: Path, record_property: Any) -> None:
    counts = counter("test_serve_survives_hostile_directory_changes")
    root = tmp_path / "manifests"
    root.mkdir()
    directory = Directory(root, Model(), atomic_when_it_matters=True)
    directory.reset(BASELINE)
    directory.model.scan()
    harness = Harness(root, tmp_path)
    loop = asyncio.new_event_loop()
    started = time.monotonic()
    try:
        loop.run_until_complete(harness.start())

        # No shrinking: each try replays a whole sequence against serve (seconds); the failing
        # sequence is printed as it was generated.
        @settings(profile(), max_examples=SERVE_EXAMPLES, phases=(Phase.explicit, Phase.reuse, Phase.generate))
        @given(ops=operations(racy=False, min_size=3, max_size=MAX_OPS))
        @example(ops=EVERY_OPERATION)
        def run(ops: list[Op]) -> None:
            loop.run_until_complete(harness.episode(ops, directory, counts))

        run()
        loop.run_until_complete(harness.close())
        assert harness.proc is not None and harness.proc.returncode == 0, harness.log_tail()
    finally:
        loop.run_until_complete(harness.close())
        loop.close()
    records = [json.loads(line) for line in harness.log.read_text(errors="replace").splitlines() if line.startswith("{")]
    bad = [r for r in records if r.get("level") in ("error", "critical") or "exception" in r]
    assert not bad, bad[:5]
    assert any(r.get("event") == "manifest error" for r in records)  # the bad input was seen
    seconds = time.monotonic() - started
    print(f"serve: {counts['sequences']} sequences, {counts['operations']} operations in {seconds:.1f} s")
    for key, value in sorted(counts.items()):
        record_property(key, value)
    record_property("seconds", round(seconds, 1))
    assert counts["sequences"] >= min(SERVE_EXAMPLES, 5)
