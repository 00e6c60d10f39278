"""The official OpenAI Python SDK against the OpenAI-compatible routes."""

import json

import openai
import pytest


def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0)


def test_models_lists_no_model_when_no_engine_is_loaded(server):
    assert list(client(server).models.list()) == []


def test_chat_without_an_engine_is_a_clear_503(server):
    with pytest.raises(openai.APIStatusError) as raised:
        client(server).chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 503
    assert raised.value.body["kind"] == "engine_unavailable"


def test_models_lists_the_loaded_model(agent_server):
    assert [m.id for m in client(agent_server).models.list()] == ["autoglm-demo"]


def weather_step(trace):
    steps = [s for s in trace if s["kind"] == "tool"]
    assert [s["tool"] for s in steps] == ["weather.get_weather"], trace
    assert steps[0]["arguments"] == {"location": "Beijing"}
    return steps[0]["result"]


def test_chat_runs_the_agent_loop_and_answers_with_the_tool_result(agent_server):
    reply = client(agent_server).chat.completions.create(
        model="autoglm-demo",
        messages=[{"role": "user", "content": "What's the weather in Beijing?"}],
        temperature=0,
    )
    result = weather_step(reply.model_extra["autoglm"]["trace"])
    assert reply.choices[0].finish_reason == "stop"
    assert f"{result['temperature']}°C" in reply.choices[0].message.content
    assert reply.usage.completion_tokens > 0


def test_streaming_chat_streams_the_steps_then_the_answer(agent_server):
    chat = client(agent_server).chat.completions
    stream = chat.create(
        model="autoglm-demo",
        messages=[{"role": "user", "content": "What's the weather in Beijing?"}],
        temperature=0,
        stream=True,
    )
    steps, text, finish = [], "", None
    for chunk in stream:
        extra = (chunk.model_extra or {}).get("autoglm") or {}
        if "step" in extra:
            if extra["step"]["kind"] == "tool":
                assert text == "", "the tool steps stream before the answer"
            steps.append(extra["step"])
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    result = weather_step(steps)
    assert finish == "stop"
    assert f"{result['temperature']}°C" in text
    plain = chat.create(
        model="autoglm-demo",
        messages=[{"role": "user", "content": "What's the weather in Beijing?"}],
        temperature=0,
    )
    assert text == plain.choices[0].message.content


def test_with_client_tools_the_call_goes_back_to_the_client(agent_server):
    tools = [{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
        },
    }]
    reply = client(agent_server).chat.completions.create(
        model="autoglm-demo",
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=tools,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
