"""The official OpenAI Python SDK against the OpenAI-compatible routes."""

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
