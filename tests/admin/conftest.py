"""Fixtures: ``serve`` in-process (the same ``serve.Server`` object the CLI runs) on the
bundled examples, loopback ports picked by the OS, and a ``grpc.aio`` channel to its admin API."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from egress_xds.admin.v1 import admin_pb2_grpc
from egress_xds.serve import DEFAULT_MANIFESTS, ServeConfig, Server
from egress_xds.translate import TranslatorOptions


@dataclass
class Live:
    server: Server
    channel: grpc.aio.Channel
    admin: admin_pb2_grpc.AdminServiceStub
    manifests: Path


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    manifests = tmp_path / "manifests"
    shutil.copytree(DEFAULT_MANIFESTS, manifests)
    server = Server(ServeConfig(manifests=[str(manifests)], ads_listen="127.0.0.1:0",
                                debug_listen="127.0.0.1:0", options=TranslatorOptions()))
    server.admin.watch.interval = 0.02
    await server.start()
    channel = grpc.aio.insecure_channel(server.admin_address)
    try:
        yield Live(server, channel, admin_pb2_grpc.AdminServiceStub(channel), manifests)
    finally:
        await channel.close()
        await server.stop()
