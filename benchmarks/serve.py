"""Serving throughput: output tokens/s at 1, 8 and 32 concurrent streams (issue 5).

    .venv/bin/python benchmarks/serve.py                       # everything this machine can run
    .venv/bin/python benchmarks/serve.py --quick               # smoke test (1 and 8 streams)
    .venv/bin/python benchmarks/serve.py --engines transformers --profile

Three comparisons, each as a ratio to its named baseline:

(a) **gRPC vs in-process**: the inference service's ``Chat`` RPC called through the SDK over a
    real loopback socket, vs the *same* engine object (the deployment's loaded
    ``EngineClient``) called in-process with the same prompt ids and sampling. Goal >= 0.95x.
(b) **vLLM vs transformers**: the same workload on a ``vllm`` deployment vs a ``transformers``
    one (both through gRPC, and both in-process). Runs where ``vllm`` imports in this
    interpreter or in ``--vllm-python`` (default: ``.venv-vllm/bin/python``); otherwise the
    section is skipped with the reason printed.
(c) **8 different adapters vs one adapter**: request ``k`` uses adapter ``k % 8`` vs every
    request using adapter 0, so concurrent streams mix 8 LoRAs in one batch where the engine
    batches (vLLM), and switch adapters between requests where it does not (transformers).
    Goal >= 0.8x.

Setup (not timed, cached under ``benchmarks/out/serve/``): a random Qwen2-shaped model (hidden
512, 4 layers, 8 heads of 64, 2 KV heads, intermediate 1536, fp32) with the demo's ~1k-token
byte-level BPE tokenizer and chat template (``demo.tiny_model.build_tiny_model``), and 8 LoRA
adapters made with peft (r=16, alpha=32, all 7 linear projections;
``tests.fixtures.inference.make_adapter``). Each engine runs in its own server process, the
registry and the inference service on one loopback port as ``danlu up`` composes them
(``tests.fixtures.inference.start_stack``); this process pushes the model and the adapters
through the registry and deploys them (``max_loras=8``), then plays the gRPC client (one
channel, one thread per stream). In-process runs are commands to the server process, which
runs them on the service's own event loop and engine.

Workload: 8 fixed one-turn chat prompts (24-43 tokens after the chat template), greedy,
``--max-new-tokens`` (32) per request. ``N`` streams share ``max(8, N)`` requests (so every
run covers all 8 adapters, at 1 stream one after the other); stream ``i`` sends requests
``i, i+N, ...`` back to back. Throughput = completion tokens (the engines' usage counts) / wall
time from the first request to the last finish. A warm-up round per configuration is not
scored; it also checks that gRPC and in-process answers are identical. Each configuration and
stream count is measured ``--repeats`` times, configurations interleaved; the median counts.

Other sessions' builds and tests may share the machine: before each measurement it waits
(``--settle``) for a quiet second, counts the CPU time everything else used during it, and
measures again (up to ``--attempts``) when that exceeded 10% of the machine. The load average
and the busy share before each run are printed and stored. ``--profile`` adds one unscored
gRPC run (8 adapters, the largest stream count) per engine with cProfile on the server's
event-loop thread (gRPC + the core) and prints where that thread's time goes.

Results: a table on stdout and ``benchmarks/out/serve.json`` (``serve-quick.json``); summaries
with their machine go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "out"
WORK = OUT / "serve"
SHAPE = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 1024,
}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANK = 16
N_ADAPTERS = 8
PROMPTS = (
    "Please introduce yourself.",
    "What is the capital of France?",
    "Write a short poem about the sea and the moon.",
    "Translate the following sentence into Chinese.",
    "请介绍一下你自己。",
    "How many steps until the loss went down?",
    "Summarise the paragraph: the weather was cold.",
    "def add(a, b): what does this function return?",
)
REPLY = "@@serve "  # prefix of the server process's protocol lines on its stdout
MODES = ("base", "one", "eight")  # no adapter / adapter 0 for all / adapter k % 8


def adapter_name(i: int) -> str:
    return f"bench-lora-{i}"


def adapter_for(mode: str, k: int) -> str | None:
    return {"base": None, "one": adapter_name(0), "eight": adapter_name(k % N_ADAPTERS)}[mode]


def jobs_for(mode: str, streams: int) -> list[tuple[str, str | None]]:
    """(prompt, adapter) of each request; stream i sends requests i, i + N, ..."""
    return [(PROMPTS[k % len(PROMPTS)], adapter_for(mode, k)) for k in range(max(8, streams))]


# --------------------------------------------------------------------------- setup


def build(work: Path) -> tuple[Path, list[Path]]:
    from demo.tiny_model import build_tiny_model
    from tests.fixtures.inference import make_adapter

    base = work / "base"
    adapters = [work / f"lora-{i}" for i in range(N_ADAPTERS)]
    stamp = work / "built.json"
    want = {"shape": SHAPE, "rank": RANK, "targets": TARGETS, "adapters": N_ADAPTERS}
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(want)):
        return base, adapters
    shutil.rmtree(work, ignore_errors=True)
    build_tiny_model(base, seed=0, **SHAPE)
    for i, path in enumerate(adapters):
        make_adapter(base, path, seed=100 + i, rank=RANK, target_modules=TARGETS)
    stamp.write_text(json.dumps(want))
    return base, adapters


# --------------------------------------------------------------------------- server process


def _reply(obj: dict) -> None:
    sys.stdout.write(REPLY + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _versions() -> dict:
    import grpc
    import torch
    import transformers

    out = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "grpcio": grpc.__version__,
    }
    try:
        import vllm

        out["vllm"] = vllm.__version__
    except Exception as exc:  # not installed, or broken beside this torch
        out["vllm"] = f"unavailable: {type(exc).__name__}: {exc}"[:300]
    return out


async def _inproc(deployments, deployment_id: str, mode: str, streams: int, max_new: int):
    """The workload on the deployment's engine object, called directly (no admission, no
    registry look-ups, no gRPC): the prompt ids and sampling are prepared first, as the core
    would (same template, stop words and defaults), and are not timed."""
    import asyncio

    from danlu_inference.core.engine import Finish, GenerationRequest, TokenDelta
    from danlu_inference.core.prompts import (
        Message,
        SamplingInput,
        choose_template,
        fit_to_context,
        render_chat,
        resolve_sampling,
    )

    rt = deployments._runtimes[("default", deployment_id)]
    tokenizer = rt.engine.tokenizer
    entries = {}
    prepared = []
    try:
        for prompt, adapter in jobs_for(mode, streams):
            entry = None
            if adapter:
                name = f"projects/default/models/{adapter}"
                if name not in entries:
                    entries[name] = await deployments._acquire_adapter(rt, name)
                entry = entries[name]
            contract = deployments._adapter_infos[entry.digest].contract if entry else None
            template = choose_template(
                tokenizer,
                requested="",
                adapter_template=contract.chat_template if contract else "",
                model_template=rt.model.contract.chat_template,
            )
            rendered = render_chat(tokenizer, [Message("user", prompt)], template)
            stops = set(rt.model.contract.stop_words) | set(template.stop_words)
            defaults = rt.model.contract.generation_defaults()
            if contract is not None:
                stops |= set(contract.stop_words)
                defaults = defaults | contract.generation_defaults()
            sampling = resolve_sampling(
                SamplingInput(temperature=0.0, max_new_tokens=max_new),
                defaults,
                tuple(sorted(stops)),
            )
            sampling = fit_to_context(
                sampling, len(rendered.ids), rt.engine.max_model_len, prompt_field="messages"
            )
            prepared.append((rendered.ids, sampling, entry.ref if entry else None))

        texts: list[str] = [""] * len(prepared)
        tokens = [0] * len(prepared)

        async def stream(i: int) -> None:
            for k in range(i, len(prepared), streams):
                ids, sampling, ref = prepared[k]
                request = GenerationRequest(uuid.uuid4().hex[:16], list(ids), sampling, ref)
                parts = []
                async for item in rt.engine.generate(request):
                    if isinstance(item, TokenDelta):
                        parts.append(item.text)
                    elif isinstance(item, Finish):
                        tokens[k] = item.completion_tokens
                texts[k] = "".join(parts)

        started = time.perf_counter()
        await asyncio.gather(*(stream(i) for i in range(streams)))
        seconds = time.perf_counter() - started
    finally:
        for entry in entries.values():
            deployments._release_adapter(rt, entry)
    return {"seconds": seconds, "tokens": sum(tokens), "requests": len(prepared), "texts": texts}


def serve_main(data_dir: Path, torch_threads: int) -> None:
    """The server process: registry + inference on one loopback port; answers commands (one
    JSON object a line on stdin) with one ``@@serve {json}`` line on stdout each."""
    import asyncio
    import cProfile
    import io
    import pstats

    from tests.fixtures.inference import inference_component, start_stack

    server = start_stack(data_dir, extra={"DANLU_INFERENCE_TORCH_THREADS": str(torch_threads)})
    deployments = inference_component(server).deployments
    loop = server._loop
    _reply({"target": server.target, "pid": os.getpid(), **_versions()})
    profiler: cProfile.Profile | None = None
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "inproc":
                    coro = _inproc(
                        deployments,
                        cmd["deployment"],
                        cmd["mode"],
                        cmd["streams"],
                        cmd["max_new_tokens"],
                    )
                    _reply(asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=1800))
                elif cmd["cmd"] == "profile_start":  # the event loop's thread: gRPC + core
                    profiler = cProfile.Profile()

                    def enable(p=profiler) -> None:
                        p.enable()

                    loop.call_soon_threadsafe(enable)
                    _reply({"ok": True})
                elif cmd["cmd"] == "profile_stop":
                    done = threading.Event()

                    def disable(p=profiler, done=done) -> None:
                        p.disable()
                        done.set()

                    loop.call_soon_threadsafe(disable)
                    done.wait(30)
                    text = io.StringIO()
                    stats = pstats.Stats(profiler, stream=text)
                    stats.sort_stats("tottime").print_stats(25)
                    stats.sort_stats("cumulative").print_stats(40)
                    _reply({"profile": text.getvalue()})
                elif cmd["cmd"] == "quit":
                    _reply({"ok": True})
                    break
            except Exception as exc:
                _reply({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        server.stop()


class ServerProcess:
    """A server process (``python benchmarks/serve.py --serve``) under some interpreter."""

    def __init__(self, python: str, data_dir: Path, torch_threads: int, env: dict | None = None):
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "server.log"
        self._log = self.log_path.open("w")
        self._replies: queue.Queue = queue.Queue()
        self.proc = subprocess.Popen(
            [python, __file__, "--serve", str(data_dir), "--torch-threads", str(torch_threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, **(env or {})},
        )
        # Drain stdout continuously: engines log there, and a full pipe would block them.
        threading.Thread(target=self._read, daemon=True).start()
        self.hello = self._wait(timeout=300)

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                self._replies.put(json.loads(line[len(REPLY) :]))
            else:
                self._log.write(line)
                self._log.flush()
        self._replies.put({"error": f"server exited ({self.proc.wait()}), see {self.log_path}"})

    def _wait(self, timeout: float) -> dict:
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise SystemExit(f"no answer from the server; see {self.log_path}") from None
        if "error" in reply:
            raise SystemExit(f"server: {reply['error']}")
        return reply

    def call(self, timeout: float = 1800, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._wait(timeout)

    def pids(self) -> list[int]:
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        return [self.proc.pid, *(c.pid for c in children)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call(timeout=60, cmd="quit")
                self.proc.wait(timeout=60)
            except (SystemExit, subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --------------------------------------------------------------------------- measuring


def grpc_run(client, pool: ThreadPoolExecutor, deployment: str, mode: str, streams: int, max_new):
    """The workload through the SDK: one thread per stream on one channel."""
    jobs = jobs_for(mode, streams)
    texts: list[str] = [""] * len(jobs)
    tokens = [0] * len(jobs)
    start = threading.Barrier(streams + 1)

    def stream(i: int) -> None:
        start.wait()
        for k in range(i, len(jobs), streams):
            prompt, adapter = jobs[k]
            parts = []
            for r in client.inference.chat(
                deployment,
                [{"role": "user", "content": prompt}],
                adapter=adapter,
                temperature=0.0,
                max_new_tokens=max_new,
            ):
                if r.WhichOneof("chunk") == "delta":
                    parts.append(r.delta.text)
                else:
                    tokens[k] = r.finish.usage.completion_tokens
            texts[k] = "".join(parts)

    futures = [pool.submit(stream, i) for i in range(streams)]
    start.wait()
    started = time.perf_counter()
    for f in futures:
        f.result()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens": sum(tokens), "requests": len(jobs), "texts": texts}


def measure_once(run, pids) -> dict:
    from benchmarks.registry_upload import CpuMeter

    load = os.getloadavg()[0]
    with CpuMeter(os.getpid(), *pids) as cpu, CpuMeter(os.getpid()) as client:
        result = run()
    result.pop("texts", None)
    seconds = result["seconds"]
    return {
        **result,
        "tokens_per_s": result["tokens"] / seconds,
        "cpu_ours_s": cpu.ours,  # this process (the gRPC client) + the server's processes
        "cpu_client_s": client.ours,
        "cpu_others_s": cpu.others,
        "load_1m": load,
        "noisy": cpu.others > 0.10 * seconds * (os.cpu_count() or 1),
    }


def wait_quiet(pids, limit: float, threshold: float = 0.15) -> float:
    """Wait up to ``limit`` seconds for a second in which other processes keep the machine's
    CPUs busy less than ``threshold`` of the time; returns that share of the last second.
    Our own processes do not count: vLLM's engine core polls while idle."""
    from benchmarks.registry_upload import CpuMeter

    deadline = time.monotonic() + limit
    while True:
        with CpuMeter(os.getpid(), *pids()) as cpu:
            time.sleep(1.0)
        busy = cpu.others / (os.cpu_count() or 1)
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def measure(run, pids, settle: float, attempts: int) -> dict:
    """One scored run: wait for a quiet second, run, and run again while it was noisy."""
    for attempt in range(1, attempts + 1):
        busy = wait_quiet(pids, settle)
        r = measure_once(run, pids())
        r.update(others_busy_before=busy, attempt=attempt)
        if not r["noisy"]:
            break
    return r


def describe(r: dict) -> str:
    return (
        f"{r['tokens_per_s']:8.1f} tok/s ({r['tokens']} tokens, {r['seconds']:.2f}s; "
        f"load {r['load_1m']:.2f}, others {r['others_busy_before']:.0%} before, "
        f"{r['cpu_others_s']:.1f} CPU s during; ours {r['cpu_ours_s']:.1f} CPU s, client "
        f"{r['cpu_client_s']:.1f}){' NOISY' if r['noisy'] else ''}"
    )


def summarize(runs: list[dict]) -> dict:
    quiet = [r for r in runs if not r["noisy"]] or runs
    return {
        "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in quiet),
        "tokens": quiet[0]["tokens"],
        "runs": len(runs),
        "noisy_runs": sum(r["noisy"] for r in runs),
    }


def bench_engine(engine: str, python: str, base: Path, adapters: list[Path], args) -> dict:
    from danlu_client import Client
    from tests.fixtures.inference import push_adapter

    data_dir = WORK / f"server-{engine}-{uuid.uuid4().hex[:6]}"
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    t0 = time.perf_counter()
    server = ServerProcess(python, data_dir, args.torch_threads, env)
    result: dict = {"server": server.hello, "measurements": {}, "summary": {}}
    try:
        with Client(server.hello["target"]) as client, ThreadPoolExecutor(32) as pool:
            model = client.registry.push_model(base, "bench-base")
            for i, path in enumerate(adapters):
                push_adapter(client, path, adapter_name(i), model)
            options = {"max_loras": N_ADAPTERS, "max_lora_rank": RANK}
            if engine == "vllm":
                options["max_num_seqs"] = max(args.streams)
            client.inference.create_deployment(
                "bench-base", deployment_id=engine, engine=engine, wait=True, timeout=900, **options
            )
            result["setup_s"] = time.perf_counter() - t0
            print(f"[{engine}] deployed in {result['setup_s']:.0f}s ({server.hello})", flush=True)

            def runner(path: str, mode: str, streams: int):
                if path == "grpc":
                    return lambda: grpc_run(
                        client, pool, engine, mode, streams, args.max_new_tokens
                    )
                return lambda: server.call(
                    cmd="inproc",
                    deployment=engine,
                    mode=mode,
                    streams=streams,
                    max_new_tokens=args.max_new_tokens,
                )

            configs = [(path, mode) for mode in args.modes for path in ("inproc", "grpc")]
            # Warm-up (unscored): loads the adapters, and checks both paths give one answer.
            warm = min(8, max(args.streams))
            result["answers_match"] = {}
            for mode in args.modes:
                texts = {path: runner(path, mode, warm)()["texts"] for path in ("inproc", "grpc")}
                result["answers_match"][mode] = texts["inproc"] == texts["grpc"]
                lengths = sorted({len(t) for t in texts["grpc"]})
                print(
                    f"[{engine}] warm-up {mode}: gRPC == in-process answers: "
                    f"{result['answers_match'][mode]} (answer lengths {lengths} chars)",
                    flush=True,
                )
            if args.profile:
                result["profile"] = profile(server, runner("grpc", "eight", max(args.streams)))
            runs: dict[str, list[dict]] = {}
            for streams in args.streams:
                for rep in range(args.repeats):
                    for path, mode in configs:
                        key = f"{path}/{mode}/{streams}"
                        r = measure(
                            runner(path, mode, streams), server.pids, args.settle, args.attempts
                        )
                        runs.setdefault(key, []).append(r)
                        print(f"[{engine}] {key:<18} rep {rep + 1}: {describe(r)}", flush=True)
            result["measurements"] = runs
            result["summary"] = {k: summarize(v) for k, v in runs.items()}
            client.inference.delete_deployment(engine)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return result


def profile(server: ServerProcess, run) -> str:
    server.call(cmd="profile_start")
    try:
        run()
    finally:
        text = server.call(cmd="profile_stop")["profile"]
    print(text, flush=True)
    return text


# --------------------------------------------------------------------------- vLLM


def find_vllm_python(requested: str) -> tuple[str | None, str]:
    """An interpreter where vllm and danlu_inference import, and why none was found."""
    candidates = [requested] if requested else [sys.executable, str(ROOT / ".venv-vllm/bin/python")]
    reasons = []
    for python in candidates:
        if not Path(python).exists():
            reasons.append(f"{python}: not found")
            continue
        probe = subprocess.run(
            [python, "-c", "import vllm, danlu_inference.service; print(vllm.__version__)"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "VLLM_NO_USAGE_STATS": "1"},
            check=False,
        )
        if probe.returncode == 0:
            return python, probe.stdout.strip().splitlines()[-1]
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        reasons.append(f"{python}: {last}")
    return None, "; ".join(reasons)


# --------------------------------------------------------------------------- report


def ratios(results: dict, streams: list[int], modes: list[str]) -> dict:
    def tps(engine: str, key: str) -> float | None:
        s = results.get(engine, {}).get("summary", {}).get(key)
        return s["median_tokens_per_s"] if s else None

    def ratio(a, b):
        return a / b if a and b else None

    out: dict = {"a_grpc_vs_inproc": {}, "b_vllm_vs_transformers": {}, "c_eight_vs_one": {}}
    for engine in results:
        for mode in modes:
            for n in streams:
                out["a_grpc_vs_inproc"][f"{engine}/{mode}/{n}"] = ratio(
                    tps(engine, f"grpc/{mode}/{n}"), tps(engine, f"inproc/{mode}/{n}")
                )
        for path in ("grpc", "inproc"):
            for n in streams:
                out["c_eight_vs_one"][f"{engine}/{path}/{n}"] = ratio(
                    tps(engine, f"{path}/eight/{n}"), tps(engine, f"{path}/one/{n}")
                )
    if "vllm" in results and "transformers" in results:
        for path in ("grpc", "inproc"):
            for mode in modes:
                for n in streams:
                    key = f"{path}/{mode}/{n}"
                    out["b_vllm_vs_transformers"][key] = ratio(
                        tps("vllm", key), tps("transformers", key)
                    )
    return out


def print_table(results: dict, rat: dict, streams: list[int], modes: list[str]) -> None:
    def f(x, fmt="{:.1f}"):
        return "-" if x is None else fmt.format(x)

    print()
    head = f"{'engine':<13}{'adapters':<9}{'N':>3}  {'in-process':>10} {'gRPC':>9} {'(a)':>6}"
    print(head + f" {'(c) in-proc':>11} {'(c) gRPC':>9}")
    for engine, res in results.items():
        s = res.get("summary", {})
        for mode in modes:
            for n in streams:
                ip = s.get(f"inproc/{mode}/{n}", {}).get("median_tokens_per_s")
                gr = s.get(f"grpc/{mode}/{n}", {}).get("median_tokens_per_s")
                a = rat["a_grpc_vs_inproc"].get(f"{engine}/{mode}/{n}")
                c1 = rat["c_eight_vs_one"].get(f"{engine}/inproc/{n}") if mode == "eight" else None
                c2 = rat["c_eight_vs_one"].get(f"{engine}/grpc/{n}") if mode == "eight" else None
                print(
                    f"{engine:<13}{mode:<9}{n:>3}  {f(ip):>10} {f(gr):>9} {f(a, '{:.2f}x'):>6}"
                    f" {f(c1, '{:.2f}x'):>11} {f(c2, '{:.2f}x'):>9}"
                )
    if rat["b_vllm_vs_transformers"]:
        print("\n(b) vLLM / transformers:")
        for key, value in rat["b_vllm_vs_transformers"].items():
            print(f"  {key:<18} {f(value, '{:.2f}x')}")
    print(
        "\ntokens/s: output tokens per second, median of the quiet repeats; (a) gRPC / in-process"
        " (goal >= 0.95x); (c) 8 adapters / 1 adapter (goal >= 0.8x)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        threads = int(sys.argv[sys.argv.index("--torch-threads") + 1])
        serve_main(Path(sys.argv[2]), threads)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 and 8 streams, 1 repeat, 8 tokens")
    parser.add_argument("--engines", default="transformers,vllm")
    parser.add_argument("--modes", default=",".join(MODES), help="base,one,eight")
    parser.add_argument("--streams", default="1,8,32")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attempts", type=int, default=2, help="runs while noisy (max)")
    parser.add_argument("--settle", type=float, default=20.0, help="max s to wait for quiet")
    parser.add_argument("--torch-threads", type=int, default=1, help="transformers engine")
    parser.add_argument("--vllm-python", default="", help="default: this or .venv-vllm's")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data dirs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.streams, args.repeats, args.max_new_tokens = "1,8", 1, 8
    args.streams = [int(n) for n in args.streams.split(",")]
    args.modes = [m for m in args.modes.split(",") if m]
    engines = [e for e in args.engines.split(",") if e]
    out_path = args.out or OUT / ("serve-quick.json" if args.quick else "serve.json")

    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base, adapters = build(WORK)
    print(f"setup: {time.perf_counter() - t0:.1f}s  base {base}", flush=True)
    print(f"load average at start: {os.getloadavg()}", flush=True)

    pythons = {"transformers": sys.executable}
    skipped = {}
    if "vllm" in engines:
        python, detail = find_vllm_python(args.vllm_python)
        if python:
            pythons["vllm"] = python
            print(f"vllm {detail} under {python}", flush=True)
        else:
            skipped["vllm"] = f"vllm does not import: {detail}"
            print(
                f"SKIPPED vLLM sections ((b), and (a)/(c) on vLLM): {skipped['vllm']}", flush=True
            )
    results = {}
    for engine in engines:
        if engine in pythons:
            results[engine] = bench_engine(engine, pythons[engine], base, adapters, args)
    rat = ratios(results, args.streams, args.modes)
    summary = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "model": {**SHAPE, "lora_rank": RANK, "lora_targets": TARGETS, "adapters": N_ADAPTERS},
        "workload": {
            "prompts": PROMPTS,
            "max_new_tokens": args.max_new_tokens,
            "streams": args.streams,
            "requests": {n: max(8, n) for n in args.streams},
            "repeats": args.repeats,
            "greedy": True,
            "torch_threads": args.torch_threads,
        },
        "skipped": skipped,
        "engines": results,
        "ratios": rat,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(summary, indent=2))
    print_table(results, rat, args.streams, args.modes)
    for engine, why in skipped.items():
        print(f"{engine}: skipped: {why}")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
