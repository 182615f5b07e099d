"""The inference part of the SDK: deployments, adapters on them, streaming chat and generation.

    with Client() as danlu:
        d = danlu.inference.create_deployment("tiny", deployment_id="tiny", wait=True)
        for chunk in danlu.inference.chat("tiny", [{"role": "user", "content": "hi"}]):
            print(chunk.delta.text, end="")

``chat`` and ``generate`` return a :class:`Stream`: iterate it for ``ChatResponse`` /
``GenerateResponse`` messages (text deltas, then one ``finish``); ``cancel()`` (or leaving a
``with`` block early) stops the generation on the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import grpc

from danlu.inference.v1 import deployment_pb2, inference_service_pb2_grpc
from danlu.inference.v1 import inference_service_pb2 as pb
from danlu_client.errors import DanluError, from_rpc_error

ENGINES = {
    "auto": deployment_pb2.ENGINE_UNSPECIFIED,
    "transformers": deployment_pb2.ENGINE_TRANSFORMERS,
    "vllm": deployment_pb2.ENGINE_VLLM,
}
DTYPES = {
    "auto": deployment_pb2.DTYPE_UNSPECIFIED,
    "float16": deployment_pb2.DTYPE_FP16,
    "bfloat16": deployment_pb2.DTYPE_BF16,
    "float32": deployment_pb2.DTYPE_FP32,
}
ROLES = {"system": pb.ROLE_SYSTEM, "user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT}
STATE_NAMES = {
    deployment_pb2.DEPLOYMENT_STATE_CREATING: "creating",
    deployment_pb2.DEPLOYMENT_STATE_READY: "ready",
    deployment_pb2.DEPLOYMENT_STATE_FAILED: "failed",
    deployment_pb2.DEPLOYMENT_STATE_DELETING: "deleting",
}
FINISH_NAMES = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_STOP_WORD: "stop_word",
    pb.FINISH_REASON_CANCELLED: "cancelled",
}

Message = Mapping[str, str] | pb.ChatMessage


class Stream:
    """A server stream of responses that maps errors to the SDK's family and can be cancelled."""

    def __init__(self, call):
        self._call = call
        self._cancelled = False

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._call
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED and self._cancelled:
                return
            raise from_rpc_error(err) from None

    def cancel(self) -> None:
        """Stop the stream; the server stops generating for it."""
        self._cancelled = True
        self._call.cancel()

    def text(self) -> str:
        """Consume the stream and return the whole completion."""
        return "".join(r.delta.text for r in self if r.WhichOneof("chunk") == "delta")

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


def _message(m: Message) -> pb.ChatMessage:
    if isinstance(m, pb.ChatMessage):
        return m
    role = m.get("role", "")
    if role not in ROLES:
        # Let the server name the bad field (messages[i].role) precisely.
        return pb.ChatMessage(role=pb.ROLE_UNSPECIFIED, content=m.get("content", ""))
    return pb.ChatMessage(role=ROLES[role], content=m.get("content", ""))


def sampling_params(
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    max_new_tokens: int = 0,
    seed: int | None = None,
    repetition_penalty: float | None = None,
    stop_words: Iterable[str] = (),
) -> pb.SamplingParams:
    """Unset (None) parameters take the artifact's generation defaults on the server."""
    params = pb.SamplingParams(max_new_tokens=max_new_tokens, stop_words=list(stop_words))
    if temperature is not None:
        params.temperature = temperature
    if top_p is not None:
        params.top_p = top_p
    if top_k is not None:
        params.top_k = top_k
    if seed is not None:
        params.seed = seed
    if repetition_penalty is not None:
        params.repetition_penalty = repetition_penalty
    return params


class InferenceClient:
    def __init__(self, channel: grpc.Channel, project: str):
        self._stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        self.project = project

    def deployment_name(self, deployment: str) -> str:
        if deployment.startswith("projects/"):
            return deployment
        return f"projects/{self.project}/deployments/{deployment}"

    def model_name(self, model: str) -> str:
        return model if model.startswith("projects/") else f"projects/{self.project}/models/{model}"

    def _call(self, method, request):
        try:
            return method(request)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    # -- deployments ----------------------------------------------------------------------

    def create_deployment(
        self,
        model: str,
        *,
        deployment_id: str = "",
        engine: str = "auto",
        bits: int = 0,
        dtype: str = "auto",
        max_model_len: int = 0,
        max_loras: int = 0,
        max_lora_rank: int = 0,
        max_num_seqs: int = 0,
        max_queue_size: int = 0,
        gpu_memory_utilization: float = 0.0,
        request_id: str = "",
        wait: bool = False,
        timeout: float = 600.0,
    ) -> deployment_pb2.Deployment:
        """Create a deployment of ``model`` (returned CREATING; ``wait`` until it is READY)."""
        deployment = deployment_pb2.Deployment(
            model=self.model_name(model),
            engine=ENGINES[engine],
            options=deployment_pb2.EngineOptions(
                bits=bits,
                dtype=DTYPES[dtype],
                max_model_len=max_model_len,
                max_loras=max_loras,
                max_lora_rank=max_lora_rank,
                max_num_seqs=max_num_seqs,
                max_queue_size=max_queue_size,
                gpu_memory_utilization=gpu_memory_utilization,
            ),
        )
        created = self._call(
            self._stub.CreateDeployment,
            pb.CreateDeploymentRequest(
                parent=f"projects/{self.project}",
                deployment=deployment,
                deployment_id=deployment_id,
                request_id=request_id,
            ),
        )
        return self.wait_ready(created.name, timeout=timeout) if wait else created

    def get_deployment(self, deployment: str) -> deployment_pb2.Deployment:
        return self._call(
            self._stub.GetDeployment,
            pb.GetDeploymentRequest(name=self.deployment_name(deployment)),
        )

    def list_deployments(self, page_size: int = 0) -> Iterator[deployment_pb2.Deployment]:
        token = ""
        while True:
            response = self._call(
                self._stub.ListDeployments,
                pb.ListDeploymentsRequest(
                    parent=f"projects/{self.project}", page_size=page_size, page_token=token
                ),
            )
            yield from response.deployments
            token = response.next_page_token
            if not token:
                return

    def delete_deployment(self, deployment: str) -> None:
        self._call(
            self._stub.DeleteDeployment,
            pb.DeleteDeploymentRequest(name=self.deployment_name(deployment)),
        )

    def wait_ready(
        self, deployment: str, *, timeout: float = 600.0, poll: float = 0.1
    ) -> deployment_pb2.Deployment:
        """Poll until READY; raises the deployment's error when it FAILED."""
        deadline = time.monotonic() + timeout
        while True:
            d = self.get_deployment(deployment)
            if d.state == deployment_pb2.DEPLOYMENT_STATE_READY:
                return d
            if d.state == deployment_pb2.DEPLOYMENT_STATE_FAILED:
                raise _deployment_error(d)
            if time.monotonic() > deadline:
                raise DanluError(
                    "DEADLINE_EXCEEDED",
                    f"{d.name} is still {STATE_NAMES.get(d.state, '?')} after {timeout:.0f}s",
                    "DEPLOYMENT_NOT_READY",
                )
            time.sleep(poll)
            poll = min(poll * 1.5, 2.0)

    def load_adapter(self, deployment: str, adapter: str) -> deployment_pb2.Deployment:
        return self._call(
            self._stub.LoadAdapter,
            pb.LoadAdapterRequest(
                name=self.deployment_name(deployment), adapter=self.model_name(adapter)
            ),
        )

    def unload_adapter(self, deployment: str, adapter: str) -> deployment_pb2.Deployment:
        return self._call(
            self._stub.UnloadAdapter,
            pb.UnloadAdapterRequest(
                name=self.deployment_name(deployment), adapter=self.model_name(adapter)
            ),
        )

    # -- generation -----------------------------------------------------------------------

    def chat(
        self,
        deployment: str,
        messages: Iterable[Message],
        *,
        adapter: str | None = None,
        system: str = "",
        chat_template: str = "",
        request_id: str = "",
        timeout: float | None = None,
        **sampling: Any,
    ) -> Stream:
        """Stream a reply to ``messages`` (``{"role": ..., "content": ...}`` dicts). Sampling
        keywords: temperature, top_p, top_k, max_new_tokens, seed, repetition_penalty,
        stop_words."""
        request = pb.ChatRequest(
            deployment=self.deployment_name(deployment),
            adapter=self.model_name(adapter) if adapter else "",
            messages=[_message(m) for m in messages],
            system=system,
            chat_template=chat_template,
            sampling=sampling_params(**sampling),
            request_id=request_id,
        )
        return Stream(self._stub.Chat(request, timeout=timeout))

    def generate(
        self,
        deployment: str,
        prompt: str,
        *,
        adapter: str | None = None,
        request_id: str = "",
        timeout: float | None = None,
        **sampling: Any,
    ) -> Stream:
        """Stream a completion of a raw ``prompt`` (no chat template)."""
        request = pb.GenerateRequest(
            deployment=self.deployment_name(deployment),
            adapter=self.model_name(adapter) if adapter else "",
            prompt=prompt,
            sampling=sampling_params(**sampling),
            request_id=request_id,
        )
        return Stream(self._stub.Generate(request, timeout=timeout))


def _deployment_error(d: deployment_pb2.Deployment) -> DanluError:
    from google.rpc import error_details_pb2

    reason = ""
    for detail in d.error.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
    code = grpc.StatusCode.UNKNOWN
    for c in grpc.StatusCode:
        if c.value[0] == d.error.code:
            code = c
    return DanluError(code.name, f"{d.name} failed: {d.error.message}", reason)
