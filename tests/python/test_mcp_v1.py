"""The last 1.x MCP Python SDK against /mcp (Streamable HTTP, session revisions)."""

import anyio
import pytest
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_session_lists_calls_reports_bad_arguments_and_hears_of_new_plugins(server):
    changed = anyio.Event()

    async def on_message(message):
        if isinstance(message, types.ServerNotification) and isinstance(message.root, types.ToolListChangedNotification):
            changed.set()

    async with streamable_http_client(server.url) as (read, write, _session_id):
        async with ClientSession(read, write, message_handler=on_message) as session:
            init = await session.initialize()
            assert init.protocolVersion == "2025-11-25"
            assert init.capabilities.tools.listChanged is True
            tools = await session.list_tools()
            assert sorted(t.name for t in tools.tools) == ["calculator.evaluate", "weather.get_weather"]

            result = await session.call_tool("weather.get_weather", {"location": "Beijing"})
            assert result.isError is False
            assert result.structuredContent["city"] == "Beijing"

            bad = await session.call_tool("calculator.evaluate", {"expression": ""})
            assert bad.isError is True

            await session.send_ping()
            server.add_plugin("units")
            with anyio.fail_after(30):
                await changed.wait()
            assert "units.convert" in [t.name for t in (await session.list_tools()).tools]


async def test_session_hears_logs_at_its_level_and_progress(server):
    logs, progress = [], []

    async def on_log(params):
        logs.append((params.level, params.data["message"]))

    async def on_progress(done, total, message):
        progress.append(done)

    server.add_test_plugin("hostile")
    async with streamable_http_client(server.url) as (read, write, _session_id):
        async with ClientSession(read, write, logging_callback=on_log) as session:
            init = await session.initialize()
            assert init.capabilities.logging is not None
            with anyio.fail_after(60):
                while "hostile.report" not in [t.name for t in (await session.list_tools()).tools]:
                    await anyio.sleep(0.1)
            await session.set_logging_level("warning")
            result = await session.call_tool("hostile.report", {}, progress_callback=on_progress)
            assert result.isError is False
            assert logs == [("warning", "almost done")], logs
            assert progress == [0, 1, 2, 3], progress
