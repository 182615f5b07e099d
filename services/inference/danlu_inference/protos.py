"""Conversions between core records and API messages (the only place that knows both)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from danlu.inference.v1 import deployment_pb2, inference_service_pb2
from danlu_inference.core.deployments import DeploymentView
from danlu_inference.core.engine import Finish, FinishReason, TokenDelta
from danlu_inference.core.prompts import Message, SamplingInput
from danlu_kit.grpc_errors import status_proto

ENGINES = {
    "transformers": deployment_pb2.ENGINE_TRANSFORMERS,
    "vllm": deployment_pb2.ENGINE_VLLM,
}
ENGINE_NAMES = {v: k for k, v in ENGINES.items()}
DTYPES = {
    "": deployment_pb2.DTYPE_UNSPECIFIED,
    "float16": deployment_pb2.DTYPE_FP16,
    "bfloat16": deployment_pb2.DTYPE_BF16,
    "float32": deployment_pb2.DTYPE_FP32,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
STATES = {
    "creating": deployment_pb2.DEPLOYMENT_STATE_CREATING,
    "ready": deployment_pb2.DEPLOYMENT_STATE_READY,
    "failed": deployment_pb2.DEPLOYMENT_STATE_FAILED,
    "deleting": deployment_pb2.DEPLOYMENT_STATE_DELETING,
}
ROLES = {
    inference_service_pb2.ROLE_SYSTEM: "system",
    inference_service_pb2.ROLE_USER: "user",
    inference_service_pb2.ROLE_ASSISTANT: "assistant",
}
FINISH = {
    FinishReason.STOP: inference_service_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: inference_service_pb2.FINISH_REASON_LENGTH,
    FinishReason.STOP_WORD: inference_service_pb2.FINISH_REASON_STOP_WORD,
    FinishReason.CANCELLED: inference_service_pb2.FINISH_REASON_CANCELLED,
}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite returns naive datetimes; they were written as UTC
        value = value.replace(tzinfo=UTC)
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def options_dict(message: deployment_pb2.EngineOptions) -> dict:
    return {
        "bits": message.bits,
        "dtype": DTYPE_NAMES.get(message.dtype, ""),
        "max_model_len": message.max_model_len,
        "max_loras": message.max_loras,
        "max_lora_rank": message.max_lora_rank,
        "max_num_seqs": message.max_num_seqs,
        "gpu_memory_utilization": message.gpu_memory_utilization,
        "max_queue_size": message.max_queue_size,
    }


def deployment(view: DeploymentView) -> deployment_pb2.Deployment:
    r = view.record
    o = r.options
    message = deployment_pb2.Deployment(
        name=r.name,
        model=r.model,
        engine=ENGINES.get(r.engine, deployment_pb2.ENGINE_UNSPECIFIED),
        options=deployment_pb2.EngineOptions(
            bits=int(o.get("bits") or 0),
            dtype=DTYPES.get(o.get("dtype") or "", deployment_pb2.DTYPE_UNSPECIFIED),
            max_model_len=int(o.get("max_model_len") or 0),
            max_loras=int(o.get("max_loras") or 0),
            max_lora_rank=int(o.get("max_lora_rank") or 0),
            max_num_seqs=int(o.get("max_num_seqs") or 0),
            gpu_memory_utilization=float(o.get("gpu_memory_utilization") or 0.0),
            max_queue_size=int(o.get("max_queue_size") or 0),
        ),
        state=STATES[r.state],
        model_digest=r.model_digest,
        adapters=[
            deployment_pb2.LoadedAdapter(
                adapter=a.name, digest=a.digest, last_used_time=timestamp(a.last_used)
            )
            for a in view.adapters
        ],
        create_time=timestamp(r.create_time),
        update_time=timestamp(r.update_time),
    )
    if r.state == "failed" and r.error:
        code = grpc.StatusCode[r.error.get("code", "INTERNAL")]
        message.error.CopyFrom(
            status_proto(code, r.error.get("message", ""), r.error.get("reason", "ERROR"))
        )
    return message


def sampling_input(p: inference_service_pb2.SamplingParams) -> SamplingInput:
    return SamplingInput(
        temperature=p.temperature if p.HasField("temperature") else None,
        top_p=p.top_p if p.HasField("top_p") else None,
        top_k=p.top_k if p.HasField("top_k") else None,
        max_new_tokens=p.max_new_tokens,
        seed=p.seed if p.HasField("seed") else None,
        repetition_penalty=p.repetition_penalty if p.HasField("repetition_penalty") else None,
        stop_words=tuple(p.stop_words),
    )


def messages(items) -> list[Message]:
    return [Message(ROLES.get(m.role, ""), m.content) for m in items]


def chunk(item: TokenDelta | Finish, response_type):
    if isinstance(item, TokenDelta):
        return response_type(
            delta=inference_service_pb2.TextDelta(text=item.text, token_count=item.token_count)
        )
    return response_type(
        finish=inference_service_pb2.Finish(
            reason=FINISH[item.reason],
            usage=inference_service_pb2.Usage(
                prompt_tokens=item.prompt_tokens, completion_tokens=item.completion_tokens
            ),
        )
    )
