"""`router.resume.Progress`: what the router keeps of a relayed stream, the continuation it
builds after a worker failed mid-stream, and the continuation's outputs rewritten into the
original request's terms."""

from __future__ import annotations

import pytest

from promptcache.engine.errors import EngineDead
from promptcache.engine.outputs import RequestOutput, Usage
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.router.resume import Progress

PROMPT = [5, 6, 7, 8]


def _out(text: str, new: list[int], usage: Usage, final: list[int] | None = None) -> RequestOutput:
    return RequestOutput(
        "r",
        text,
        new,
        final is not None,
        "length" if final else None,
        usage,
        0.5,
        None,
        token_ids=final or [],
    )


def _relayed(params: SamplingParams) -> Progress:
    """Two tokens relayed from the first worker (its prompt: 4 tokens, 2 of them cached)."""
    progress = Progress(GenerationRequest(PROMPT, params, request_id="r"))
    for text, token in (("Hel", 11), ("Hello", 12)):
        out = progress.merge(_out(text, [token], Usage(4, 2, 1, 1 + len(progress.token_ids))))
        progress.record(out)
    return progress


def test_the_continuation_carries_the_output_so_far() -> None:
    progress = _relayed(SamplingParams(max_tokens=5, seed=3))
    cont = progress.continuation()
    assert cont is not None
    assert cont.token_ids == [*PROMPT, 11, 12] and cont.resumed == 2
    assert cont.params.max_tokens == 3 and cont.params.seed == 3
    assert cont.request_id == "r"


def test_its_outputs_read_as_the_original_requests() -> None:
    progress = _relayed(SamplingParams(max_tokens=5))
    progress.continuation()
    step = progress.merge(_out("Hello w", [13], Usage(6, 4, 0, 1)))
    assert step.text == "Hello w" and step.new_token_ids == [13]
    assert step.usage == Usage(4, 2, 1, 3)  # the first worker's prompt side; 3 generated
    progress.record(step)
    last = progress.merge(_out("Hello world", [14], Usage(6, 4, 0, 2), final=[13, 14]))
    assert last.token_ids == [11, 12, 13, 14] and last.usage.completion_tokens == 4
    assert last.ttft_s == 0.5


def test_a_continuation_that_does_not_extend_the_text_is_refused() -> None:
    progress = _relayed(SamplingParams(max_tokens=5))
    progress.continuation()
    with pytest.raises(EngineDead):
        progress.merge(_out("Goodbye", [13], Usage(6, 4, 0, 1)))


@pytest.mark.parametrize("relayed", [0, 2])
def test_no_continuation_without_output_or_room(relayed: int) -> None:
    params = SamplingParams(max_tokens=2)
    progress = _relayed(params) if relayed else Progress(GenerationRequest(PROMPT, params))
    assert progress.continuation() is None
