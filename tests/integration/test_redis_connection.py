"""Clients through Redis Sentinel: they find the master the sentinels name."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.redis_connection import async_client, sync_client
from shared.settings import Settings
from tests.processes import Process, RedisServer, free_port, wait_until


@pytest.fixture
def sentinel(redis_server: RedisServer, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor primary 127.0.0.1 {redis_server.port} 1\n"
    )
    binary = shutil.which("redis-server")
    assert binary
    process = Process(f"sentinel-{port}", [binary, str(config), "--sentinel"])
    probe = Settings(redis_sentinels=[f"127.0.0.1:{port}"], redis_master_name="primary")
    try:
        wait_until(lambda: _answers(probe), 10, "the sentinel")
        yield port
    finally:
        process.stop()


def _answers(settings: Settings) -> bool:
    try:
        return bool(sync_client(settings).ping())
    except Exception:
        return False


def test_clients_reach_the_master_through_the_sentinels(redis_server: RedisServer, sentinel: int) -> None:
    settings = Settings(
        redis_sentinels=f"127.0.0.1:{sentinel}",  # as the environment gives it
        redis_master_name="primary",
        redis_url="redis://ignored-host:1/13",
    )
    client = sync_client(settings)
    client.set("through-sentinel", "yes")
    assert client.connection_pool.connection_kwargs["db"] == 13

    async def read() -> str | None:
        reader = async_client(settings)
        try:
            value = await reader.get("through-sentinel")
            return str(value) if value is not None else None
        finally:
            await reader.aclose()

    assert asyncio.run(read()) == "yes"
    direct = sync_client(Settings(redis_url=redis_server.url(13)))
    assert direct.get("through-sentinel") == b"yes"
    direct.delete("through-sentinel")
