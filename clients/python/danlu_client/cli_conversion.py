"""`danlu convert`, `danlu merge` and `danlu conversions ls|show`: the conversion commands.

Registered on the `main` group by :func:`register` (called at the bottom of ``cli.py``).
Same conventions: ``-o json`` prints one JSON document, server errors exit 1; convert and merge
wait for the job by default (progress bar on stderr) and exit 1 unless it succeeded.
"""

from __future__ import annotations

import sys

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from danlu.common.v1 import common_pb2
from danlu_client.cli import Context, err, out
from danlu_client.conversion import DEVICES, DTYPES

pass_ctx = click.pass_obj


def _state(state: int) -> str:
    return common_pb2.JobState.Name(state).removeprefix("JOB_STATE_")


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1] if name else "-"


def _kind(job) -> str:
    return "merge" if job.WhichOneof("spec") == "merge" else "convert"


def _wait(c: Context, job, wait: bool) -> None:
    conversion = c.client.conversion
    if not wait:
        c.emit(job, lambda j: out.print(f"{j.name} {_state(j.state)}", highlight=False))
        return
    bar = task = None
    if not c.json and err.is_terminal:
        bar = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tensors"),
            console=err,
        )
        task = bar.add_task(_kind(job), total=None)
        bar.start()
    try:
        for event in conversion.watch(job.name):
            kind = event.WhichOneof("payload")
            if kind == "progress" and bar is not None:
                p = event.progress
                bar.update(task, completed=p.completed, total=p.total or None)
            elif c.json:
                continue
            elif kind == "state_changed":
                line = f"{_short(job.name)}: {_state(event.state_changed.state)}"
                (bar.console if bar is not None else err).print(line, highlight=False)
            elif kind == "log":
                (bar.console if bar is not None else err).print(
                    event.log.message, highlight=False, markup=False
                )
    except KeyboardInterrupt:
        err.print(f"\nstopped waiting; the job keeps running ({job.name})", highlight=False)
        sys.exit(130)
    finally:
        if bar is not None:
            bar.stop()
    final = conversion.get_job(job.name)
    c.emit(final, _print_job)
    if final.state != common_pb2.JOB_STATE_SUCCEEDED:
        if not c.json:
            message = final.error.message or _state(final.state)
            err.print(f"[bold red]error:[/] {_short(final.name)}: {message}", highlight=False)
        sys.exit(1)


def _print_job(j) -> None:
    out.print(f"{j.name}  {_kind(j)}  {_state(j.state)}", highlight=False)
    spec = j.merge if _kind(j) == "merge" else j.convert_checkpoint
    if _kind(j) == "merge":
        out.print(f"  adapter: {spec.adapter_model}  base: {spec.base_model or '(its own)'}")
    else:
        out.print(f"  checkpoint: {spec.checkpoint}", highlight=False)
    if j.progress.total:
        out.print(f"  progress: {j.progress.completed}/{j.progress.total} tensors")
    if j.output_model:
        out.print(f"  output: {j.output_model}", highlight=False)
    if j.HasField("precision_report"):
        r = j.precision_report
        out.print(
            f"  precision: max |Δlogit| {r.max_abs_logit_diff:.3g}, mean {r.mean_abs_logit_diff:.3g},"
            f" greedy match {r.greedy_match_rate:.0%}"
        )
    if j.error.message:
        out.print(f"  error: {j.error.message}", highlight=False, markup=False)


_dtype = click.option("--dtype", type=click.Choice(list(DTYPES)), default="fp16", show_default=True)
_fp32 = click.option("--fp32", is_flag=True, help="Same as --dtype fp32.")
_shard = click.option("--max-shard-size", default="2GB", show_default=True)
_wait_opt = click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Follow the job to its end."
)


@click.command()
@click.argument("job")
@click.option("--checkpoint", "step", default="", help="Step to convert (default: the best).")
@_dtype
@_fp32
@_shard
@click.option("--name", required=True, help="Id of the model to register.")
@_wait_opt
@pass_ctx
def convert(c: Context, job, step, dtype, fp32, max_shard_size, name, wait):
    """Convert a checkpoint of training JOB into a registered adapter or model."""
    if step:
        checkpoint = f"{job}@{step}"
    else:
        checkpoint = c.client.training.get_job(job).best_checkpoint
        if not checkpoint:
            raise click.ClickException(f"{job} has no checkpoint yet")
    created = c.client.conversion.convert(
        checkpoint, name=name, dtype="fp32" if fp32 else dtype, max_shard_size=max_shard_size
    )
    _wait(c, created, wait)


@click.command()
@click.argument("base")
@click.argument("adapter")
@click.option("--name", required=True, help="Id of the merged model to register.")
@_dtype
@_fp32
@_shard
@click.option("--device", type=click.Choice(list(DEVICES)), default="cpu", show_default=True)
@click.option("--skip-precision-report", is_flag=True)
@_wait_opt
@pass_ctx
def merge(
    c: Context,
    base,
    adapter,
    name,
    dtype,
    fp32,
    max_shard_size,
    device,
    skip_precision_report,
    wait,
):
    """Merge ADAPTER into BASE and register the merged model."""
    created = c.client.conversion.merge(
        adapter,
        base=base,
        name=name,
        dtype="fp32" if fp32 else dtype,
        max_shard_size=max_shard_size,
        device=device,
        skip_precision_report=skip_precision_report,
    )
    _wait(c, created, wait)


@click.group()
def conversions():
    """List and show conversion and merge jobs."""


@conversions.command("ls")
@pass_ctx
def conversions_ls(c: Context):
    jobs = list(c.client.conversion.list_jobs())

    def render(items):
        table = Table("job", "kind", "state", "progress", "output")
        for j in items:
            progress = f"{j.progress.completed}/{j.progress.total}" if j.progress.total else "-"
            table.add_row(
                _short(j.name), _kind(j), _state(j.state), progress, j.output_model or "-"
            )
        out.print(table)

    c.emit(jobs, render)


@conversions.command("show")
@click.argument("job")
@pass_ctx
def conversions_show(c: Context, job):
    c.emit(c.client.conversion.get_job(job), _print_job)


@conversions.command("cancel")
@click.argument("job")
@pass_ctx
def conversions_cancel(c: Context, job):
    c.emit(c.client.conversion.cancel_job(job), _print_job)


def register(group: click.Group) -> None:
    for command in (convert, merge, conversions):
        group.add_command(command)
