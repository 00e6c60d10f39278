"""The official MCP Python SDK 2.x against /mcp: the session revisions and the stateless 2026-07-28."""

import anyio
import pytest
from mcp import Client, types

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def names(tools):
    return sorted(tool.name for tool in tools.tools)


async def test_legacy_session_lists_calls_and_hears_of_new_plugins(server):
    changed = anyio.Event()

    async def on_message(message):
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with Client(server.url, mode="legacy", message_handler=on_message) as client:
        assert client.protocol_version == "2025-11-25"
        tools = await client.list_tools()
        assert names(tools) == ["calculator.evaluate", "weather.get_weather"]
        weather = next(t for t in tools.tools if t.name == "weather.get_weather")
        assert weather.input_schema["required"] == ["location"]
        assert weather.annotations.read_only_hint is True
        assert weather.output_schema["type"] == "object"

        result = await client.call_tool("weather.get_weather", {"location": "Beijing"})
        assert result.is_error is False
        assert result.structured_content["city"] == "Beijing"

        number = await client.call_tool("calculator.evaluate", {"expression": "6 * 7"})
        assert number.structured_content == {"result": 42.0}

        bad = await client.call_tool("weather.get_weather", {"city": "Beijing"})
        assert bad.is_error is True
        assert "invalid_arguments" in bad.content[0].text

        server.add_plugin("units")
        with anyio.fail_after(30):
            await changed.wait()
        assert "units.convert" in names(await client.list_tools())


async def test_stateless_2026_revision_discovers_lists_calls_and_listens(server):
    async with Client(server.url, mode="2026-07-28") as client:
        assert client.protocol_version == "2026-07-28"
        tools = await client.list_tools()
        assert "weather.get_weather" in names(tools)
        result = await client.call_tool("weather.get_weather", {"location": "Paris"})
        assert result.structured_content["city"] == "Paris"
        failed = await client.call_tool("calculator.evaluate", {"expression": "1/0"})
        assert failed.is_error is True and "division by zero" in failed.content[0].text

        async with client.listen(tools_list_changed=True) as subscription:
            server.add_plugin("text")
            with anyio.fail_after(30):
                async for event in subscription:
                    break
        assert "text.sha256" in names(await client.list_tools(cache_mode="refresh"))


async def test_auto_mode_settles_on_the_stateless_revision(server):
    async with Client(server.url) as client:
        assert client.protocol_version == "2026-07-28"
        assert client.server_info.name == "autoglm"
        assert len((await client.list_tools()).tools) == 2


async def test_stdio_transport_serves_the_same_tools(server):
    from mcp import StdioServerParameters

    params = StdioServerParameters(command=server.binary, args=server.stdio_args())
    async with Client(params) as client:
        tools = await client.list_tools()
        assert "calculator.evaluate" in names(tools)
        result = await client.call_tool("calculator.evaluate", {"expression": "2 ^ 10"})
        assert result.structured_content == {"result": 1024.0}
