"""`danlu up` composes the inference service beside the registry on one port."""

from __future__ import annotations

import asyncio
import threading

from danlu_client import Client
from danlu_embedded.up import start_embedded


def test_embedded_process_serves_inference(tmp_path, tiny_model_dir):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start_embedded(tmp_path, 0), loop).result(60)
    try:
        with Client(f"127.0.0.1:{server.port}") as c:
            c.registry.push_model(tiny_model_dir, "tiny")
            c.inference.create_deployment("tiny", deployment_id="tiny", wait=True, timeout=60)
            reply = c.inference.chat(
                "tiny", [{"role": "user", "content": "Hello!"}], max_new_tokens=4
            )
            assert reply.text() is not None
            assert [d.name for d in c.inference.list_deployments()] == [
                "projects/default/deployments/tiny"
            ]
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0.5), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
