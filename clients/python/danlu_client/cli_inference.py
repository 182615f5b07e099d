"""`danlu deploy`, `danlu deployments ...` and `danlu chat`: the inference commands of the CLI.

Registered on the `main` group by :func:`register` (called at the bottom of ``cli.py``).
Same conventions: ``-o json`` prints one JSON document, server errors exit 1.

`danlu chat` follows ``xtuner chat``: the same sampling defaults (temperature 0.1, top-k 40,
top-p 0.75, 2048 new tokens, seed 0), the same interactive loop (a double Enter sends, RESET
clears the history, EXIT quits), ``-p`` answers one prompt and exits. It deploys the model on
demand when no deployment serves it yet.
"""

from __future__ import annotations

import sys

import click
from rich.table import Table

from danlu.inference.v1 import deployment_pb2
from danlu_client.cli import Context, err, out, to_dict
from danlu_client.errors import NotFoundError
from danlu_client.inference import ENGINES, FINISH_NAMES, STATE_NAMES

pass_ctx = click.pass_obj  # the group's Context (robust to `python -m danlu_client.cli`)

PROMPT = "\ndouble enter to end input (EXIT: exit chat, RESET: reset history) >>> "
ENGINE_NAMES = {v: k for k, v in ENGINES.items()}
READY = deployment_pb2.DEPLOYMENT_STATE_READY
CREATING = deployment_pb2.DEPLOYMENT_STATE_CREATING


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1] if name else "-"


def _print_deployment(d) -> None:
    state = STATE_NAMES.get(d.state, "?")
    out.print(f"{d.name}  ({state}, {ENGINE_NAMES.get(d.engine, '?')})")
    out.print(f"  model     {d.model}  {d.model_digest}")
    o = d.options
    bits = f"{o.bits}-bit" if o.bits else "full precision"
    out.print(
        f"  options   {bits}, context {o.max_model_len}, max_loras {o.max_loras}, "
        f"max_lora_rank {o.max_lora_rank}, seqs {o.max_num_seqs}, queue {o.max_queue_size}"
    )
    if d.state == deployment_pb2.DEPLOYMENT_STATE_FAILED:
        out.print(f"  error     {d.error.message}")
    for a in d.adapters:
        out.print(f"  adapter   {a.adapter}  {a.digest[:19]}")


def _wait(c: Context, name: str, quiet: bool):
    if quiet:
        return c.client.inference.wait_ready(name)
    with err.status(f"loading {_short(name)}..."):
        return c.client.inference.wait_ready(name)


@click.command()
@click.argument("model")
@click.option("--name", "deployment_id", default="", help="Deployment id (default: MODEL).")
@click.option("--engine", type=click.Choice(list(ENGINES)), default="auto", show_default=True)
@click.option("--bits", type=click.Choice(["0", "4", "8"]), default="0", help="Quantise on load.")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float16", "bfloat16", "float32"]),
    default="auto",
    show_default=True,
)
@click.option("--max-model-len", type=int, default=0, help="Context length (0: the model's).")
@click.option("--max-loras", type=int, default=0, help="Adapters kept loaded (0: 4).")
@click.option("--max-lora-rank", type=int, default=0, help="Highest adapter rank (0: 64).")
@click.option("--max-num-seqs", type=int, default=0, help="Concurrent sequences (0: engine's).")
@click.option("--max-queue-size", type=int, default=0, help="Waiting requests (0: 64).")
@click.option("--no-wait", is_flag=True, help="Return while the model is still loading.")
@pass_ctx
def deploy(c: Context, model, deployment_id, engine, bits, dtype, no_wait, **options):
    """Deploy MODEL (a base, merged or full model) on a serving engine."""
    bits = int(bits)
    deployment = c.client.inference.create_deployment(
        model,
        deployment_id=deployment_id or _default_id(model, bits),
        engine=engine,
        bits=bits,
        dtype=dtype,
        **options,
    )
    if not no_wait:
        deployment = _wait(c, deployment.name, c.json)
    c.emit(deployment, _print_deployment)


def _default_id(model: str, bits: int) -> str:
    model_id = _short(model)
    return f"{model_id}-{bits}bit" if bits else model_id


@click.group()
def deployments():
    """List, show and delete deployments."""


@deployments.command("ls")
@pass_ctx
def deployments_ls(c: Context):
    """List deployments."""
    items = list(c.client.inference.list_deployments())

    def render(rows):
        table = Table("NAME", "MODEL", "ENGINE", "STATE", "BITS", "ADAPTERS")
        for d in rows:
            table.add_row(
                _short(d.name),
                _short(d.model),
                ENGINE_NAMES.get(d.engine, "?"),
                STATE_NAMES.get(d.state, "?"),
                str(d.options.bits or "-"),
                ", ".join(_short(a.adapter) for a in d.adapters) or "-",
            )
        out.print(table)

    c.emit(items, render)


@deployments.command("show")
@click.argument("name")
@pass_ctx
def deployments_show(c: Context, name):
    """Show one deployment."""
    c.emit(c.client.inference.get_deployment(name), _print_deployment)


@deployments.command("rm")
@click.argument("name")
@pass_ctx
def deployments_rm(c: Context, name):
    """Delete a deployment (in-flight streams end with finish reason CANCELLED)."""
    c.client.inference.delete_deployment(name)
    c.emit({"deleted": name}, lambda _: out.print(f"deleted {name}"))


# -- chat ---------------------------------------------------------------------------------


def _find_or_deploy(c: Context, model: str, bits: int, engine: str):
    """A deployment serving MODEL with these bits (or the deployment named MODEL); deployed
    on demand."""
    inference = c.client.inference
    wanted = inference.model_name(model)
    candidates = [
        d
        for d in inference.list_deployments()
        if d.model == wanted and d.options.bits == bits and d.state in (READY, CREATING)
    ]
    candidates.sort(key=lambda d: d.state != READY)
    if candidates:
        d = candidates[0]
    else:
        try:
            d = inference.get_deployment(model)  # MODEL may name a deployment
        except NotFoundError:
            err.print(f"deploying {model}...", highlight=False)
            d = inference.create_deployment(
                model, deployment_id=_default_id(model, bits), engine=engine, bits=bits
            )
    if d.state != READY:
        d = _wait(c, d.name, c.json)
    return d


def _read_input() -> str | None:
    """xtuner chat's input: lines until an empty one (a double Enter); None at end of input."""
    while True:
        click.echo(PROMPT, nl=False)
        lines = []
        while True:
            line = sys.stdin.readline()
            if not line:  # end of input
                return "\n".join(lines) if lines else None
            line = line.rstrip("\n")
            if line == "":
                break
            lines.append(line)
        if lines:
            return "\n".join(lines)


@click.command()
@click.argument("model")
@click.option("--adapter", default=None, help="An adapter trained on MODEL (registry name).")
@click.option("--bits", type=click.Choice(["0", "4", "8"]), default="0", help="Quantise on load.")
@click.option("--engine", type=click.Choice(list(ENGINES)), default="auto", show_default=True)
@click.option("--system", default="", help="System prompt.")
@click.option(
    "--prompt-template",
    default="",
    help="Named template instead of the artifact's own (internlm2_chat, qwen_chat, llama3_chat).",
)
@click.option("--temperature", type=float, default=0.1, show_default=True)
@click.option("--top-k", type=int, default=40, show_default=True)
@click.option("--top-p", type=float, default=0.75, show_default=True)
@click.option(
    "--max-new-tokens",
    type=int,
    default=2048,
    show_default=True,
    help="Capped to the deployment's context unless given.",
)
@click.option("--repetition-penalty", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--stop-word", "stop_words", multiple=True, help="Ends the answer (repeatable).")
@click.option("--no-streamer", is_flag=True, help="Print each answer whole, not as it streams.")
@click.option("-p", "--prompt", default=None, help="Answer this prompt and exit.")
@click.pass_context
def chat(
    click_ctx, model, adapter, bits, engine, system, prompt_template, no_streamer, prompt, **s
):
    """Chat with MODEL (optionally with --adapter), interactively or with -p."""
    c: Context = click_ctx.obj
    d = _find_or_deploy(c, model, int(bits), engine)
    source = click_ctx.get_parameter_source("max_new_tokens")
    if source == click.core.ParameterSource.DEFAULT and d.options.max_model_len:
        s["max_new_tokens"] = min(s["max_new_tokens"], d.options.max_model_len)
    s["stop_words"] = list(s["stop_words"])

    def answer(messages) -> tuple[str, object]:
        stream = c.client.inference.chat(
            d.name,
            messages,
            adapter=adapter,
            system=system,
            chat_template=prompt_template,
            **s,
        )
        parts, finish = [], None
        live = not no_streamer and not c.json
        try:
            for r in stream:
                if r.WhichOneof("chunk") == "delta":
                    parts.append(r.delta.text)
                    if live:
                        click.echo(r.delta.text, nl=False)
                else:
                    finish = r.finish
        except KeyboardInterrupt:  # stop this answer, keep the session
            stream.cancel()
        text = "".join(parts)
        if not c.json:
            click.echo(text if not live else "")
        return text, finish

    if prompt is not None:
        text, finish = answer([{"role": "user", "content": prompt}])
        if c.json:
            doc = {"deployment": d.name, "adapter": adapter or "", "text": text}
            if finish is not None:
                doc["finish_reason"] = FINISH_NAMES.get(finish.reason, "?")
                doc["usage"] = to_dict(finish.usage)
            c.emit(doc, lambda _: None)
        return
    history: list[dict] = []
    while True:
        text = _read_input()
        if text is None or text.strip() == "EXIT":
            return
        if text.strip() == "RESET":
            history = []
            click.echo("Log: History responses have been removed!")
            continue
        history.append({"role": "user", "content": text})
        reply, _ = answer(history)
        history.append({"role": "assistant", "content": reply})


def register(group: click.Group) -> None:
    for command in (deploy, deployments, chat):
        group.add_command(command)
