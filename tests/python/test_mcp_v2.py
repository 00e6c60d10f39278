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


async def wait_for_tool(client, name, **list_args):
    with anyio.fail_after(60):
        while name not in names(await client.list_tools(**list_args)):
            await anyio.sleep(0.1)


async def test_legacy_session_hears_logs_at_its_level_and_progress(server):
    logs, progress = [], []

    async def on_log(params):
        logs.append((params.level, params.logger, params.data))

    async def on_progress(done, total, message):
        progress.append((done, total, message))

    server.add_test_plugin("hostile")
    async with Client(server.url, mode="legacy", logging_callback=on_log) as client:
        await wait_for_tool(client, "hostile.report")
        quiet = await client.call_tool("hostile.report", {})
        assert quiet.is_error is False and logs == [], "no level chosen: no log messages"

        await client.set_logging_level("info")
        result = await client.call_tool("hostile.report", {}, progress_callback=on_progress)
        assert result.is_error is False
        assert len(result.structured_content["idempotency_key"]) == 32
        assert result.structured_content["deadline_ms"] > 0
        guest = [(level, data["message"]) for level, logger, data in logs if logger == "hostile.report"]
        assert guest == [("info", "starting"), ("warning", "almost done")], logs
        host_lines = [data for level, logger, data in logs if logger == "autoglm"]
        assert host_lines and host_lines[0]["outcome"] == "ok" and host_lines[0]["fuel"] > 0, logs
        assert [p[0] for p in progress] == [0, 1, 2, 3], progress
        assert progress[-1][1] == 3 and progress[2][2] == "step 2", progress

        logs.clear()
        await client.set_logging_level("warning")
        await client.call_tool("hostile.report", {})
        assert [data["message"] for _, _, data in logs] == ["almost done"], logs


async def test_stateless_requests_choose_their_log_level_in_meta(server):
    logs, progress = [], []

    async def on_log(params):
        logs.append((params.level, params.data))

    async def on_progress(done, total, message):
        progress.append(done)

    server.add_test_plugin("hostile")
    async with Client(server.url, mode="2026-07-28", logging_callback=on_log, log_level="debug") as client:
        await wait_for_tool(client, "hostile.report", cache_mode="refresh")
        result = await client.call_tool("hostile.report", {}, progress_callback=on_progress)
        assert result.is_error is False
        messages = [data["message"] for level, data in logs]
        assert messages[:3] == ["debug detail", "starting", "almost done"], logs
        assert progress == [0, 1, 2, 3], progress


async def test_stdio_session_hears_logs_at_its_level(server):
    from mcp import StdioServerParameters

    logs = []

    async def on_log(params):
        logs.append(params.data["message"])

    server.add_test_plugin("hostile")
    params = StdioServerParameters(command=server.binary, args=server.stdio_args())
    async with Client(params, mode="legacy", logging_callback=on_log) as client:
        await client.set_logging_level("info")
        result = await client.call_tool("hostile.report", {})
        assert result.is_error is False
        assert logs[:2] == ["starting", "almost done"], logs


async def test_task_templates_are_tools_that_answer_with_the_final_state(tmp_path):
    from conftest import Server

    effects, templates = tmp_path / "effects", tmp_path / "templates"
    effects.mkdir()
    templates.mkdir()
    (templates / "restock.toml").write_text(
        'description = "Lock stock for a SKU, then pay for it"\n'
        '[inputs.sku]\ntype = "string"\n'
        '[[stages]]\nname = "lock"\ntool = "orders.act"\nargs = { stage = { "$ref" = "input.sku" } }\n'
        '[[stages]]\nname = "pay"\ntool = "orders.act"\nargs = { stage = "pay", given = { "$ref" = "lock.result.id" } }\n'
    )
    config = f'[tasks]\ndir = "{templates}"\n[[plugins.orders.dirs]]\nhost = "{effects}"\nguest = "/data"\nmode = "rw"\n'
    server = Server(tmp_path, config=config)
    try:
        server.add_test_plugin("orders")
        async with Client(server.url, mode="legacy") as client:
            await wait_for_tool(client, "orders.act")
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            restock = tools["task.restock"]
            assert restock.description == "Lock stock for a SKU, then pay for it"
            assert restock.input_schema["required"] == ["sku"]

            result = await client.call_tool("task.restock", {"sku": "sku-7"})
            assert result.is_error is False, result
            task = result.structured_content
            assert task["state"] == "succeeded"
            assert [s["state"] for s in task["stages"]] == ["succeeded", "succeeded"]
            assert task["stages"][1]["result"]["given"] == task["stages"][0]["result"]["id"]
            assert "done sku-7" in (effects / "log").read_text()

            wrong = await client.call_tool("task.restock", {"sku": 7})
            assert wrong.is_error is True and "inputs.sku" in wrong.content[0].text
    finally:
        server.stop()
