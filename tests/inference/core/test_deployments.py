"""Deployment use cases with a fake engine: failed loads, admission, cancellation, deletion."""

from __future__ import annotations

import asyncio
import json

import pytest

from danlu_inference.adapters.db import DeploymentRepository
from danlu_inference.core.adapters_cache import ArtifactCache
from danlu_inference.core.artifacts import ArtifactInfo
from danlu_inference.core.deployments import ChatInput, CreateInput, Deployments
from danlu_inference.core.engine import EngineHealth, EngineUsage, Finish, FinishReason, TokenDelta
from danlu_inference.core.prompts import Message, SamplingInput
from danlu_kit.db import make_engine
from danlu_kit.errors import FailedPrecondition, ResourceExhausted

MODEL = "projects/p/models/m"
HELLO = [Message("user", "hi")]


class FakeTokenizer:
    chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"

    def apply_chat_template(self, conversation, chat_template, add_generation_prompt, tokenize):
        return "".join(m["content"] for m in conversation)

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}


class FakeEngine:
    """Yields one token per tick until max_new_tokens or cancellation."""

    def __init__(self):
        self.tokenizer = FakeTokenizer()
        self.max_model_len = 64
        self.generated = 0
        self.closed = False

    async def generate(self, request):
        for i in range(request.sampling.max_new_tokens):
            if self.closed:
                yield Finish(FinishReason.CANCELLED, len(request.prompt_ids), i)
                return
            await asyncio.sleep(0.005)
            self.generated += 1
            yield TokenDelta("x", 1)
        yield Finish(FinishReason.LENGTH, len(request.prompt_ids), request.sampling.max_new_tokens)

    async def add_adapter(self, adapter):
        pass

    async def remove_adapter(self, adapter_id):
        pass

    def health(self):
        return EngineHealth(not self.closed)

    def usage(self):
        return EngineUsage()

    async def close(self):
        self.closed = True


class FakeFactory:
    name = "fake"

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.engines: list[FakeEngine] = []

    def available(self):
        return None

    def load(self, model_dir, options):
        if self.fail:
            raise RuntimeError("out of memory")
        self.engines.append(FakeEngine())
        return self.engines[-1]


class FakeSource:
    def get(self, name):
        return ArtifactInfo(
            name=name, kind="base", digest="sha256:" + "a" * 64, max_context_length=64
        )

    def download(self, name, dest):
        (dest / "config.json").write_text(json.dumps({}))
        return self.get(name)


def make(tmp_path, factory) -> Deployments:
    repo = DeploymentRepository(make_engine(f"sqlite:///{tmp_path}/db.sqlite"))
    repo.migrate()
    source = FakeSource()
    cache = ArtifactCache(tmp_path / "cache", source, 10**9)
    # The fake engine stands in for transformers (its option rules apply).
    return Deployments(
        repo, source, cache, {"transformers": factory}, default_engine="transformers"
    )


async def ready(d: Deployments, deployment_id: str, **options):
    await d.create(CreateInput("p", MODEL, deployment_id, options=options))
    for _ in range(200):
        view = await d.get("p", deployment_id)
        if view.record.state != "creating":
            return view
        await asyncio.sleep(0.01)
    raise AssertionError("still creating")


async def collect(stream):
    return [item async for item in stream]


def test_failed_load_is_recorded(tmp_path):
    async def main():
        d = make(tmp_path, FakeFactory(fail=True))
        view = await ready(d, "broken")
        assert view.record.state == "failed"
        assert view.record.error["reason"] == "ENGINE_LOAD_FAILED"
        assert "out of memory" in view.record.error["message"]
        with pytest.raises(FailedPrecondition) as info:
            await collect(d.chat("p", "broken", ChatInput(HELLO)))
        assert info.value.reason == "DEPLOYMENT_NOT_READY"

    asyncio.run(main())


def test_queue_bound_and_cancellation(tmp_path):
    async def main():
        factory = FakeFactory()
        d = make(tmp_path, factory)
        await ready(d, "q", max_queue_size=1)
        long = ChatInput(HELLO, sampling=SamplingInput(max_new_tokens=50))
        first = d.chat("p", "q", long).__aiter__()
        await first.__anext__()  # generating
        second = asyncio.ensure_future(collect(d.chat("p", "q", long)))
        await asyncio.sleep(0.02)
        with pytest.raises(ResourceExhausted) as info:
            await collect(d.chat("p", "q", long))
        assert info.value.reason == "QUEUE_FULL"
        await first.aclose()  # the client went away
        items = await asyncio.wait_for(second, 5)
        assert items[-1].reason is FinishReason.LENGTH
        engine = factory.engines[0]
        assert engine.generated < 100, "the abandoned stream stopped"

    asyncio.run(main())


def test_delete_cancels_in_flight_and_queued(tmp_path):
    async def main():
        d = make(tmp_path, FakeFactory())
        await ready(d, "gone")

        long = ChatInput(HELLO, sampling=SamplingInput(max_new_tokens=60))
        running = asyncio.ensure_future(collect(d.chat("p", "gone", long)))
        queued = asyncio.ensure_future(collect(d.chat("p", "gone", long)))
        await asyncio.sleep(0.05)
        await d.delete("p", "gone")
        for task in (running, queued):
            items = await asyncio.wait_for(task, 5)
            assert items[-1].reason is FinishReason.CANCELLED

    asyncio.run(main())
