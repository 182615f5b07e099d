"""`make demo`: the danlu journey on the embedded default (SQLite + local object store, no GPU).

Starts `danlu up` in the background, builds a tiny base model locally (no hub) or takes the
user's (`make demo MODEL=path`), generates the seed's personal-assistant dataset plus an Alpaca
file and a text corpus, pushes them, lists and previews them, shows the precise error a broken
file gets, trains the built-in `tiny_lora_cpu` config with live progress and evaluation answers,
prints the answers per checkpoint side by side, converts the chosen checkpoint to an adapter,
merges it, chats with the base, base + adapter and the merged model, and prints the before /
after answers side by side. Exits non-zero if a step fails.

Environment: MODEL (a Hugging Face model directory to use instead of the tiny model),
DEMO_RECORDS (personal-assistant repetitions, default 1000), DEMO_DATA_DIR (default: a fresh
temporary directory), DEMO_PORT (default: a free port).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DANLU = str(Path(sys.executable).with_name("danlu"))

BASE = "tiny"  # the registry name tiny_lora_cpu trains (MODEL= pushes the user's model as it)
IDENTITY_QUESTION = "请介绍一下你自己"
IDENTITY_ANSWER = "我是一个由丹炉微调的个人助手。"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(title: str) -> None:
    print(f"\n\033[1;33m== {title}\033[0m", flush=True)


def danlu(*args: str, target: str, expect_failure: bool = False) -> subprocess.CompletedProcess:
    print("$ danlu " + " ".join(args), flush=True)
    result = subprocess.run([DANLU, "--target", target, *args], text=True, capture_output=True)
    sys.stdout.write(result.stdout)
    sys.stdout.write(result.stderr)
    if (result.returncode != 0) != expect_failure:
        raise SystemExit(f"demo failed: `danlu {' '.join(args)}` exited {result.returncode}")
    return result


def chat(target: str, model: str, *extra: str) -> str:
    """One greedy answer to the identity question (as a script would: -p and JSON output)."""
    result = danlu("-o", "json", "chat", model, *extra, "-p", IDENTITY_QUESTION,
                   "--temperature", "0", "--max-new-tokens", "24", target=target)  # fmt: skip
    return json.loads(result.stdout)["text"].strip()


def write_datasets(directory: Path, records: int) -> dict[str, Path]:
    identity = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": IDENTITY_QUESTION},
            {"role": "assistant", "content": IDENTITY_ANSWER},
        ]
    }
    paths = {
        "assistant": directory / "personal_assistant.json",
        "alpaca": directory / "alpaca.jsonl",
        "corpus": directory / "corpus.txt",
        "broken": directory / "broken.jsonl",
    }
    paths["assistant"].write_text(json.dumps([identity] * records, ensure_ascii=False, indent=1))
    alpaca = [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name a primary colour.", "input": "", "output": "Red."},
    ]
    paths["alpaca"].write_text("".join(json.dumps(r) + "\n" for r in alpaca))
    paths["corpus"].write_text(
        "丹炉 turns data into models.\nThe furnace needs heat, ingredients and patience.\n"
    )
    paths["broken"].write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]}
        )
        + "\n{not json\n"
    )
    return paths


def main() -> int:
    records = int(os.environ.get("DEMO_RECORDS", "1000"))
    data_dir = Path(os.environ.get("DEMO_DATA_DIR") or tempfile.mkdtemp(prefix="danlu-demo-"))
    port = int(os.environ.get("DEMO_PORT") or free_port())
    target = f"127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="danlu-demo-files-"))
    step(f"starting `danlu up` on {target} (data in {data_dir})")
    server = subprocess.Popen(
        [DANLU, "up", "--data-dir", str(data_dir), "--port", str(port), "--log-level", "warning"]
    )
    try:
        from danlu_client import Client

        with Client(target) as client:
            client.wait_ready(timeout=60)

        if os.environ.get("MODEL"):
            model_dir = Path(os.environ["MODEL"]).expanduser()
            step(f"using the model directory {model_dir}")
        else:
            step("building a tiny Qwen2-shaped base model locally (random weights, no hub)")
            from demo.tiny_model import build_tiny_model

            model_dir = build_tiny_model(work / "tiny-qwen2")
        danlu("models", "push", str(model_dir), "--name", BASE, target=target)

        step(
            f"pushing the personal-assistant dataset ({records} identical records), Alpaca and text"
        )
        paths = write_datasets(work, records)
        danlu("datasets", "push", str(paths["assistant"]), "--name", "assistant", target=target)
        danlu("datasets", "push", str(paths["assistant"]), "--name", "assistant", target=target)
        danlu("datasets", "push", str(paths["alpaca"]), "--name", "alpaca", target=target)
        danlu("datasets", "push", str(paths["corpus"]), "--name", "corpus", target=target)
        danlu("datasets", "ls", target=target)
        danlu("models", "ls", target=target)

        step("previewing exactly what the model will see (trained tokens highlighted)")
        danlu("datasets", "preview", "assistant", "--model", BASE, "-n", "1", target=target)
        danlu("datasets", "preview", "corpus", "--model", BASE, "-n", "1", target=target)

        step("a broken file gets a precise error and nothing is stored")
        danlu(
            "datasets",
            "push",
            str(paths["broken"]),
            "--name",
            "broken",
            target=target,
            expect_failure=True,
        )
        danlu("datasets", "show", "broken", target=target, expect_failure=True)

        step("training the built-in tiny_lora_cpu config (LoRA, 30 steps, answers every 10)")
        danlu("configs", "ls", "-p", "tiny", target=target)
        danlu("train", "tiny_lora_cpu", "--name", "identity", "--set", f"base_model={BASE}",
              "--follow", target=target)  # fmt: skip
        danlu("jobs", "checkpoints", "identity", target=target)

        step("evaluation answers per checkpoint: pick the one before it starts to parrot")
        danlu("jobs", "evals", "identity", target=target)

        step("converting the last checkpoint to a PEFT adapter, then merging it into the base")
        danlu("convert", "identity", "--checkpoint", "step-30", "--name", "identity-adapter",
              "--dtype", "fp32", target=target)  # fmt: skip
        # fp32 on this CPU demo so base + adapter and the merged model compute the same numbers
        # (XTuner's fp16 default is for GPUs).
        danlu("merge", BASE, "identity-adapter", "--name", "identity-merged", "--dtype", "fp32",
              target=target)  # fmt: skip
        danlu("models", "ls", target=target)

        step("chatting: the base model, base + adapter, and the merged model")
        answers = {
            "base": chat(target, BASE),
            "base + adapter": chat(target, BASE, "--adapter", "identity-adapter"),
            "merged": chat(target, "identity-merged"),
        }
        print(f"\nQ: {IDENTITY_QUESTION}")
        width = max(len(k) for k in answers)
        for label, answer in answers.items():
            print(f"  {label:<{width}} → {answer or '(nothing but whitespace: a random model)'}")
        if answers["merged"] != answers["base + adapter"]:
            raise SystemExit(
                "demo failed: the merged model answers differently from base + adapter"
            )
        step("done: the journey ran end to end on the embedded default")
        return 0
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
        if not os.environ.get("DEMO_DATA_DIR"):
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
