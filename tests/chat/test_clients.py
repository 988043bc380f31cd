"""Real clients against the real server: the openai SDK (sync, async) and LangChain."""

import asyncio
from decimal import Decimal

import openai
import pytest

from tests.chat.helpers import expected_cost, prompt_tokens, set_quota_left

pytestmark = pytest.mark.slow


def _sdk(gateway, key, cls=openai.OpenAI):
    return cls(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=20)


def test_openai_sdk_non_streaming(gateway, accounts, upstream):
    acct = accounts.make(tier="pro", credit="1")
    sdk = _sdk(gateway, acct.key)
    msgs = [{"role": "user", "content": "Hello SDK"}]
    completion = sdk.chat.completions.create(model="deepseek-chat", messages=msgs)
    assert completion.choices[0].message.content == "Hello from the fake upstream ."
    assert completion.model == "deepseek-v4-flash"
    assert completion.usage.prompt_tokens == prompt_tokens(msgs)
    raw = sdk.chat.completions.with_raw_response.create(model="deepseek-chat", messages=msgs)
    assert raw.headers["x-silk-cost"] == "0"  # inside the pro tier's free quota
    assert raw.headers["x-request-id"]
    models = [m.id for m in sdk.models.list()]
    assert "mimo-v2.5-pro" in models and "deepseek-reasoner" in models


def test_openai_sdk_streaming_with_usage(app, gateway, accounts, upstream):
    acct = accounts.make(tier="free", credit="1")
    set_quota_left(app, acct.id)
    sdk = _sdk(gateway, acct.key)
    msgs = [{"role": "user", "content": "stream please [[fake: pieces=20 chunk_delay=0.01]]"}]
    stream = sdk.chat.completions.create(model="deepseek-chat", messages=msgs, stream=True,
                                         stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == " ".join(f"w{i}" for i in range(20))
    assert usage.completion_tokens == 20
    cost = expected_cost("deepseek-chat", prompt_tokens(msgs), 20)
    assert Decimal(str(usage.model_extra["cost"])) == cost
    assert accounts.audit() == []


def test_openai_sdk_raises_on_mid_stream_error(gateway, accounts, upstream):
    acct = accounts.make(credit="1")
    sdk = _sdk(gateway, acct.key)
    msgs = [{"role": "user", "content": "x [[fake: pieces=10 cut_after=4]]"}]
    with pytest.raises(openai.APIError):
        for _ in sdk.chat.completions.create(model="deepseek-chat", messages=msgs, stream=True):
            pass
    assert accounts.audit() == []


def test_openai_sdk_error_types(gateway, accounts, upstream):
    acct = accounts.make(credit="1")
    with pytest.raises(openai.AuthenticationError):
        _sdk(gateway, "sk-wrong").chat.completions.create(
            model="deepseek-chat", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        _sdk(gateway, acct.key).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as err:
        _sdk(gateway, acct.key).chat.completions.create(
            model="deepseek-chat", messages=[{"role": "user", "content": "x"}], temperature=3)
    assert err.value.body["param"] == "temperature"


def test_openai_async_sdk(gateway, accounts, upstream):
    acct = accounts.make(credit="1")

    async def run():
        sdk = _sdk(gateway, acct.key, openai.AsyncOpenAI)
        msgs = [{"role": "user", "content": "async [[fake: pieces=5 chunk_delay=0.01]]"}]
        plain = await sdk.chat.completions.create(model="mimo-v2.5", messages=msgs)
        stream = await sdk.chat.completions.create(model="ark-code-latest", messages=msgs,
                                                   stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        results = await asyncio.gather(*[sdk.chat.completions.create(
            model="deepseek-chat", messages=msgs) for _ in range(10)])
        await sdk.close()
        return plain, text, results

    plain, text, results = asyncio.run(run())
    assert plain.choices[0].message.content == "w0 w1 w2 w3 w4"
    assert text == "w0 w1 w2 w3 w4"
    assert all(r.choices[0].message.content == "w0 w1 w2 w3 w4" for r in results)
    assert len(accounts.usage_records(acct.id)) == 12
    assert accounts.audit() == []


def test_langchain_chat_openai(gateway, accounts, upstream):
    from langchain_openai import ChatOpenAI

    acct = accounts.make(credit="1")
    llm = ChatOpenAI(model="deepseek-chat", base_url=gateway.url + "/v1", api_key=acct.key,
                     max_retries=0, timeout=20)
    reply = llm.invoke("Hello LangChain")
    assert reply.content == "Hello from the fake upstream ."
    streamed = "".join(chunk.content for chunk in llm.stream("stream [[fake: pieces=6]]"))
    assert streamed == "w0 w1 w2 w3 w4 w5"
    assert len(accounts.usage_records(acct.id)) == 2
    assert accounts.audit() == []
