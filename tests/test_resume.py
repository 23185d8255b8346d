"""A request resumed from its own earlier output (`GenerationRequest.resumed`, what the
router sends after a worker died mid-stream) continues exactly: the same tokens, the same
text, greedy, seeded and penalized alike."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.engine.errors import RequestError
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.engine.wire import request_from_json, request_to_json
from promptcache.model.loading.loader import LoadedModel
from promptcache.text.chat import chat_prompt_ids

N = 24  # output tokens of the undisturbed run
PARAMS = {
    "greedy": SamplingParams(max_tokens=N, temperature=0, ignore_eos=True),
    "seeded": SamplingParams(max_tokens=N, temperature=1.0, top_p=0.9, seed=5, ignore_eos=True),
    "penalized": SamplingParams(
        max_tokens=N,
        temperature=0.8,
        seed=9,
        frequency_penalty=1.5,
        presence_penalty=0.5,
        ignore_eos=True,
    ),
}


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_a_resumed_request_continues_exactly(
    bundled: LoadedModel, make_engine: Any, kind: str
) -> None:
    engine = make_engine(bundled, kv_cache_bytes=64 << 20)
    prompt = chat_prompt_ids(bundled.tokenizer, [{"role": "user", "content": "Tell a story."}])
    params = PARAMS[kind]
    whole = engine.run([GenerationRequest(prompt, params)])[0]
    assert len(whole.token_ids) == N
    for cut in (1, 13):
        earlier = whole.token_ids[:cut]
        rest = SamplingParams(**{**_fields(params), "max_tokens": N - cut})
        resumed = engine.run([GenerationRequest(prompt + earlier, rest, resumed=cut)])[0]
        assert resumed.token_ids == whole.token_ids[cut:]
        assert resumed.text == whole.text  # the text includes the earlier output
        assert resumed.usage.prompt_tokens == len(prompt) + cut
        assert resumed.usage.completion_tokens == N - cut


def test_resumed_travels_and_defaults_to_zero() -> None:
    request = GenerationRequest([1, 2, 3], resumed=2, request_id="r")
    body = request_to_json(request)
    assert request_from_json(body).resumed == 2
    del body["resumed"]  # a router of an earlier version
    assert request_from_json(body).resumed == 0


def test_resumed_must_leave_a_prompt(tiny_llama: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_llama, block_size=4, kv_cache_bytes=1 << 20)
    with pytest.raises(RequestError, match="resumed"):
        engine.submit(GenerationRequest([1, 2], resumed=2))


def _fields(p: SamplingParams) -> dict[str, Any]:
    return {name: getattr(p, name) for name in p.__dataclass_fields__}
