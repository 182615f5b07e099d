"""The `danlu` command line, built on the SDK. Exit codes: 0 success, 1 the server refused or
failed (message on stderr), 2 bad command-line usage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from danlu_client.client import DEFAULT_TARGET, FORMATS, MODEL_KINDS, Client
from danlu_client.errors import DanluError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def to_dict(message) -> dict:
    """JSON for scripts: proto field names, and every field present (``created: false`` too)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class Context:
    def __init__(self, target: str, token: str | None, project: str, output: str):
        self.target, self.token, self.project, self.output = target, token, project, output
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.target, token=self.token, project=self.project)
        return self._client

    @property
    def json(self) -> bool:
        return self.output == "json"

    def emit(self, message_or_obj, render) -> None:
        """Print one JSON document (``--output json``) or the human rendering."""
        if self.json:
            if hasattr(message_or_obj, "DESCRIPTOR"):
                message_or_obj = to_dict(message_or_obj)
            elif isinstance(message_or_obj, list):
                message_or_obj = [
                    to_dict(m) if hasattr(m, "DESCRIPTOR") else m for m in message_or_obj
                ]
            click.echo(json.dumps(message_or_obj, indent=2, ensure_ascii=False))
        else:
            render(message_or_obj)


pass_ctx = click.make_pass_decorator(Context)


class DanluGroup(click.Group):
    """Turns SDK errors into one stderr message and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DanluError as e:
            err.print(
                f"[bold red]error:[/] {e.code} ({e.reason or '-'}): {e.message}",
                highlight=False,
                markup=True,
            )
            for v in e.violations:
                err.print(f"  - {v.field}: {v.description}", highlight=False, markup=False)
            sys.exit(1)


@click.group(cls=DanluGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--target",
    envvar="DANLU_TARGET",
    default=DEFAULT_TARGET,
    show_default=True,
    help="HOST:PORT of the danlu endpoint (env DANLU_TARGET).",
)
@click.option("--token", envvar="DANLU_TOKEN", default=None, help="Bearer token (env DANLU_TOKEN).")
@click.option("--project", envvar="DANLU_PROJECT", default="default", show_default=True)
@click.option(
    "--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def main(ctx, target, token, project, output):
    """danlu (丹炉): fine-tune, convert, merge and serve LLMs as services."""
    ctx.obj = Context(target, token, project, output)


# -- up -----------------------------------------------------------------------------------


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("~/.danlu").expanduser(),
    show_default=True,
    help="Where the SQLite database and local object store live.",
)
@click.option("--port", type=int, default=50051, show_default=True)
@click.option("--log-level", default="info", show_default=True)
def up(data_dir: Path, port: int, log_level: str):
    """Run every service in this process on one port (embedded default, loopback, no auth)."""
    try:
        from danlu_embedded.up import run
    except ImportError:
        raise click.ClickException(
            "`danlu up` needs the server packages: pip install 'danlu-client[server]'"
        ) from None
    run(data_dir.expanduser(), port, log_level)


# -- datasets -----------------------------------------------------------------------------


@main.group()
def datasets():
    """Push, list, show, preview and delete datasets."""


def _progress(total: int, label: str, enabled: bool):
    if not enabled:
        return None, None
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task(label, total=total)
    return bar, (lambda n: bar.advance(task, n))


@datasets.command("push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Dataset id (created on first push).")
@click.option(
    "--format", "fmt", type=click.Choice(list(FORMATS)), default="auto", show_default=True
)
@click.option("--description", default="")
@pass_ctx
def datasets_push(c: Context, file: Path, name: str, fmt: str, description: str):
    """Upload FILE as a new version of dataset NAME (validated and normalised)."""
    bar, advance = _progress(
        file.stat().st_size, f"pushing {file.name}", not c.json and err.is_terminal
    )
    if bar:
        bar.start()
    try:
        result = c.client.registry.push_dataset(
            file, name, format=fmt, description=description, progress=advance
        )
    finally:
        if bar:
            bar.stop()

    def render(r):
        v = r.dataset_version
        verb = "created" if r.created else "unchanged (identical content exists)"
        out.print(f"{v.name} {verb}")
        _print_version(v)

    c.emit(result, render)


def _format_name(value: int) -> str:
    return {v: k for k, v in FORMATS.items()}.get(value, "?")


def _print_version(v) -> None:
    s = v.stats
    out.print(f"  digest   {v.digest}")
    out.print(
        f"  format   {_format_name(v.format)}  records {s.record_count}  chars {s.total_chars}"
    )
    if s.turns_by_role:
        roles = ", ".join(f"{k}={n}" for k, n in sorted(s.turns_by_role.items()))
        out.print(
            f"  turns    {roles} (per record {s.min_turns}-{s.max_turns}, mean {s.mean_turns:.1f})"
        )


@datasets.command("ls")
@pass_ctx
def datasets_ls(c: Context):
    """List datasets."""
    items = list(c.client.registry.list_datasets())

    def render(rows):
        table = Table("NAME", "VERSIONS", "LATEST", "UPDATED")
        for d in rows:
            table.add_row(
                d.name.rsplit("/", 1)[-1],
                str(d.version_count),
                d.latest_version.rsplit("/", 1)[-1],
                d.update_time.ToJsonString(),
            )
        out.print(table)

    c.emit(items, render)


@datasets.command("show")
@click.argument("ref")
@pass_ctx
def datasets_show(c: Context, ref: str):
    """Show NAME (all versions) or NAME@VERSION."""
    if "@" in ref:
        version = c.client.registry.get_dataset_version(ref)
        c.emit(version, lambda v: (out.print(v.name), _print_version(v)))
        return
    dataset = c.client.registry.get_dataset(ref)
    versions = list(c.client.registry.list_dataset_versions(ref))
    doc = {"dataset": to_dict(dataset), "versions": [to_dict(v) for v in versions]}

    def render(_):
        out.print(f"{dataset.name}  {dataset.description}")
        for v in versions:
            out.print(
                f"- {v.name.rsplit('/', 1)[-1]}  {v.create_time.ToJsonString()}  refs {v.reference_count}"
            )
            _print_version(v)

    c.emit(doc, render)


@datasets.command("preview")
@click.argument("ref")
@click.option("--model", required=True, help="Model whose tokenizer renders the records.")
@click.option("-n", "count", type=int, default=3, show_default=True)
@click.option("--chat-template", default="", help="Named template instead of the tokenizer's.")
@click.option("--system", "system_prompt", default="")
@click.option("--max-length", type=int, default=0)
@pass_ctx
def datasets_preview(c: Context, ref, model, count, chat_template, system_prompt, max_length):
    """Render records as the model will see them; trained (loss) tokens are highlighted."""
    result = c.client.registry.preview_dataset(
        ref,
        model,
        count=count,
        chat_template=chat_template,
        system_prompt=system_prompt,
        max_length=max_length,
    )

    def render(r):
        # Colour on a terminal; elsewhere (logs, CI) trained text is wrapped in ⟦ ⟧ instead.
        marked = not out.is_terminal
        legend = "text inside ⟦ ⟧" if marked else "[bold green]green[/] text"
        template = r.chat_template or "none (raw text)"
        out.print(f"{r.dataset_version}, template {template}; {legend} carries loss")
        for rec in r.records:
            note = " (truncated)" if rec.truncated else ""
            out.rule(
                f"record {rec.index}: {rec.token_count} tokens, {rec.loss_token_count} trained{note}"
            )
            text = Text()
            for seg in rec.segments:
                if marked:
                    text.append(f"⟦{seg.text}⟧" if seg.trains else seg.text)
                else:
                    text.append(seg.text, style="bold green" if seg.trains else "dim")
            out.print(text)

    c.emit(result, render)


@datasets.command("rm")
@click.argument("ref")
@pass_ctx
def datasets_rm(c: Context, ref: str):
    """Delete dataset NAME, or one version NAME@VERSION."""
    c.client.registry.delete_dataset(ref)
    c.emit({"deleted": ref}, lambda _: out.print(f"deleted {ref}"))


# -- models -------------------------------------------------------------------------------


@main.group()
def models():
    """Push, list, show and delete models."""


@models.command("push")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True)
@click.option("--kind", type=click.Choice(list(MODEL_KINDS)), default="auto", show_default=True)
@click.option("--description", default="")
@click.option("--replace", is_flag=True, help="Upload a new revision of an existing model.")
@pass_ctx
def models_push(c: Context, directory: Path, name, kind, description, replace):
    """Register a Hugging Face model directory (or a PEFT adapter) as NAME."""
    total = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    bar, advance = _progress(total, f"pushing {directory.name}", not c.json and err.is_terminal)
    if bar:
        bar.start()
    try:
        model = c.client.registry.push_model(
            directory, name, kind=kind, description=description, replace=replace, progress=advance
        )
    finally:
        if bar:
            bar.stop()
    c.emit(model, _print_model)


def _kind_name(value: int) -> str:
    return {v: k for k, v in MODEL_KINDS.items()}.get(value, "?")


def _print_model(m) -> None:
    out.print(f"{m.name}  ({_kind_name(m.kind)}, {m.model_type or '-'}, {m.size_bytes} bytes)")
    out.print(f"  digest    {m.digest}")
    out.print(
        f"  context   {m.max_context_length}  chat template: {'yes' if m.has_chat_template else 'no'}"
    )
    out.print(f"  files     {', '.join(f.path for f in m.files)}")


@models.command("ls")
@click.option("--kind", type=click.Choice(list(MODEL_KINDS)), default="auto")
@pass_ctx
def models_ls(c: Context, kind):
    """List models."""
    items = list(c.client.registry.list_models(kind=kind))

    def render(rows):
        table = Table("NAME", "KIND", "TYPE", "SIZE", "DIGEST")
        for m in rows:
            table.add_row(
                m.name.rsplit("/", 1)[-1],
                _kind_name(m.kind),
                m.model_type,
                str(m.size_bytes),
                m.digest[:19],
            )
        out.print(table)

    c.emit(items, render)


@models.command("show")
@click.argument("name")
@pass_ctx
def models_show(c: Context, name):
    """Show one model."""
    c.emit(c.client.registry.get_model(name), _print_model)


@models.command("rm")
@click.argument("name")
@pass_ctx
def models_rm(c: Context, name):
    """Delete a model (refused while something references it)."""
    c.client.registry.delete_model(name)
    c.emit({"deleted": name}, lambda _: out.print(f"deleted {name}"))


# -- training: `danlu train`, `danlu jobs ...`, `danlu configs ...` ------------------------

from danlu_client.cli_training import register  # noqa: E402 (needs the names above)

register(main)

# -- inference: `danlu deploy`, `danlu deployments ...`, `danlu chat` -----------------------

from danlu_client.cli_inference import register as register_inference  # noqa: E402

register_inference(main)

# -- conversion: `danlu convert`, `danlu merge`, `danlu conversions ...` -------------------

from danlu_client.cli_conversion import register as register_conversion  # noqa: E402

register_conversion(main)


if __name__ == "__main__":
    main()
