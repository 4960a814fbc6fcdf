"""Client commands of the inference service: `chat` (interactive or one turn), `generate`, and the
`adapters` group (`list`, `add`, `remove`, `load`, `unload`; `deploy` comes from tutorforge.deploy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from tutorforge.client import InferenceClient
from tutorforge.core.cli_support import (
    DEFAULT_ADDRESS,
    AddressOption,
    JsonOption,
    connect,
    console,
    err_console,
    print_json,
    rpc_errors,
)
from tutorforge.core.names import model_label
from tutorforge.v1 import common_pb2
from tutorforge.v1 import inference_pb2 as pb

adapters_app = typer.Typer(help="LoRA adapters: the registry and what the server has loaded.", no_args_is_help=True)

AdapterOption = Annotated[str, typer.Option("--adapter", help="Adapter name (default: the base model).")]
MaxTokensOption = Annotated[int, typer.Option("--max-tokens", help="New tokens at most (0 = server default).")]
TemperatureOption = Annotated[Optional[float], typer.Option(help="Sampling temperature (default greedy).")]
TopPOption = Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling mass.")]
SeedOption = Annotated[Optional[int], typer.Option(help="Seed for reproducible sampling.")]
StopOption = Annotated[Optional[list[str]], typer.Option("--stop", help="Stop string, repeatable.")]
FallbackOption = Annotated[bool, typer.Option("--fallback-to-base", help="Answer with the base model if the adapter is unavailable.")]
StoreOption = Annotated[Optional[str], typer.Option("--store", help="Artifact store (default from settings).")]


def register(app: typer.Typer) -> None:
    app.command()(chat)
    app.command()(generate)
    app.add_typer(adapters_app, name="adapters")


def _client(address: str) -> InferenceClient:
    return connect(address).inference


def _parameters(temperature: float | None, top_p: float | None, seed: int | None, stop: list[str] | None) -> dict[str, Any]:
    """The GenerationParameters fields given (unset ones keep the server's defaults)."""
    given = {"temperature": temperature, "top_p": top_p, "seed": seed, "stop": stop or None}
    return {name: value for name, value in given.items() if value is not None}


def generate(
    text: Annotated[str, typer.Argument(help="Prompt to complete (raw text, no chat template).")],
    adapter: AdapterOption = "",
    max_tokens: MaxTokensOption = 0,
    temperature: TemperatureOption = None,
    top_p: TopPOption = None,
    seed: SeedOption = None,
    stop: StopOption = None,
    fallback_to_base: FallbackOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    json: JsonOption = False,
) -> None:
    """Complete a prompt, streaming the tokens as they come."""
    client = _client(address)
    options = dict(adapter=adapter, fallback_to_base=fallback_to_base, max_tokens=max_tokens, **_parameters(temperature, top_p, seed, stop))
    with rpc_errors():
        if json:
            print_json(client.generate(text, **options))
            return
        for event in client.generate_stream(text, **options):
            if event.WhichOneof("event") == "token":
                console.print(event.token.text, end="", markup=False, highlight=False, soft_wrap=True)
            else:
                console.print()
                _print_summary(event.summary)


def chat(
    message: Annotated[Optional[str], typer.Option("--message", "-m", help="Send one turn and exit (for scripts).")] = None,
    adapter: AdapterOption = "",
    max_tokens: MaxTokensOption = 0,
    temperature: TemperatureOption = None,
    top_p: TopPOption = None,
    seed: SeedOption = None,
    retrieval: Annotated[bool, typer.Option("--retrieval/--no-retrieval", help="Ground answers on the ingested material.")] = True,
    limit: Annotated[int, typer.Option(help="Passages to retrieve (0 = server default).")] = 0,
    score_threshold: Annotated[Optional[float], typer.Option("--score-threshold", help="Minimum passage score.")] = None,
    system_prompt: Annotated[str, typer.Option("--system-prompt", help="Replace the Socratic tutor prompt.")] = "",
    program: Annotated[str, typer.Option(help="Answer with an optimized program (optimization service).")] = "",
    fallback_to_base: FallbackOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    json: JsonOption = False,
) -> None:
    """Talk to the tutor: answers stream in, followed by the passages they cite."""
    client = _client(address)
    options = pb.RetrievalOptions(enabled=retrieval, limit=limit)
    if score_threshold is not None:
        options.score_threshold = score_threshold
    fields = dict(
        adapter=adapter,
        fallback_to_base=fallback_to_base,
        max_tokens=max_tokens,
        parameters=_parameters(temperature, top_p, seed, None),
        retrieval=options,
        system_prompt=system_prompt,
        program=program,
    )
    history: list[common_pb2.ChatMessage] = []
    if message is not None:
        history.append(common_pb2.ChatMessage(role="user", content=message))
        with rpc_errors():
            if json:
                print_json(client.chat(history, **fields))
            else:
                _stream_turn(client, history, fields)
        return
    console.print(f"[bold]tutor[/] at {address} — empty line or Ctrl-D to quit")
    while True:
        try:
            text = console.input("[bold cyan]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if not text or text in ("exit", "quit"):
            break
        history.append(common_pb2.ChatMessage(role="user", content=text))
        with rpc_errors():
            reply = _stream_turn(client, history, fields)
        history.append(common_pb2.ChatMessage(role="assistant", content=reply))


def _stream_turn(client: InferenceClient, history: list[common_pb2.ChatMessage], fields: dict) -> str:
    citations: list[pb.Citation] = []
    parts: list[str] = []
    console.print("[bold green]tutor>[/] ", end="")
    for event in client.chat_stream(history, **fields):
        kind = event.WhichOneof("event")
        if kind == "citations":
            citations = list(event.citations.citations)
        elif kind == "token":
            parts.append(event.token.text)
            console.print(event.token.text, end="", markup=False, highlight=False, soft_wrap=True)
        else:
            console.print()
            if citations:
                console.print(citations_table(citations))
            _print_summary(event.summary)
    return "".join(parts)


def citations_table(citations: list[pb.Citation]) -> Table:
    table = Table("tag", "passage", "score", "source", title="sources", title_justify="left")
    for citation in citations:
        table.add_row(citation.tag, f"{citation.document_id} #{citation.chunk_index}", f"{citation.score:.3f}", citation.source)
    return table


def _print_summary(summary: pb.GenerationSummary) -> None:
    reason = pb.FinishReason.Name(summary.finish_reason).removeprefix("FINISH_REASON_").lower()
    model = model_label(summary.adapter)
    fallback = " (adapter unavailable: fell back to base)" if summary.fell_back_to_base else ""
    err_console.print(
        f"[dim]{model}{fallback} · {summary.usage.completion_tokens} tokens · {reason} · "
        f"first token {summary.time_to_first_token_seconds:.2f} s · {summary.duration_seconds:.2f} s[/]"
    )


# ---- adapters ------------------------------------------------------------------------------------------


def _registry(store: str | None):  # noqa: ANN202 - imported lazily to keep the CLI start fast
    from tutorforge.artifacts.adapters import AdapterRegistry
    from tutorforge.artifacts.store import ArtifactStore
    from tutorforge.core.settings import Settings

    settings = Settings()
    return AdapterRegistry(ArtifactStore(store or settings.store_url)), settings


@adapters_app.command("list")
def list_adapters(address: AddressOption = DEFAULT_ADDRESS, json: JsonOption = False) -> None:
    """Adapters in the registry and loaded in the server, with their metadata."""
    with rpc_errors():
        response = _client(address).adapters()
    if json:
        print_json(response)
        return
    table = Table("name", "version", "loaded", "rank", "targets", "metadata", title=f"{response.engine} engine · base {response.base_model}")
    for adapter in response.adapters:
        metadata = ", ".join(f"{k}={v}" for k, v in sorted(adapter.metadata.items()))
        table.add_row(
            adapter.name, adapter.version, "yes" if adapter.loaded else "", str(adapter.rank or ""),
            ",".join(adapter.target_modules), metadata,
        )
    console.print(table)


@adapters_app.command("add")
def add_adapter(
    path: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="PEFT adapter folder (adapter_model.safetensors + adapter_config.json).")],
    name: Annotated[str, typer.Option("--name", help="Registry name (lowercase letters, digits, . _ -).")],
    subject: Annotated[str, typer.Option(help="Subject the adapter tutors.")] = "",
    grade_level: Annotated[str, typer.Option("--grade-level", help="Grade level.")] = "",
    teaching_style: Annotated[str, typer.Option("--teaching-style", help="Teaching style.")] = "",
    base_model: Annotated[str, typer.Option("--base-model", help="Base model it was trained on (default: the configured one).")] = "",
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Register a local adapter folder as the next version of NAME in the artifact store's registry."""
    from dataclasses import asdict

    from tutorforge.core.errors import TutorforgeError
    from tutorforge.core.models import chat_model_name

    registry, settings = _registry(store)
    metadata = {k: v for k, v in {"subject": subject, "grade_level": grade_level, "teaching_style": teaching_style}.items() if v}
    try:
        record = registry.register(path, name, base_model or chat_model_name(settings.models), metadata=metadata)
    except TutorforgeError as error:
        err_console.print(f"[bold red]error[/] {error.code.name}: {error.message}")
        raise typer.Exit(code=2) from None
    if json:
        print_json(asdict(record))
    else:
        console.print(f"registered [bold]{record.name}[/] {record.version} (rank {record.rank}, base {record.base_model})")


@adapters_app.command("remove")
def remove_adapter(
    name: Annotated[str, typer.Argument(help="Adapter name.")],
    version: Annotated[str, typer.Option(help="Only this version (default: all).")] = "",
    store: StoreOption = None,
) -> None:
    """Delete an adapter (or one version) from the registry."""
    from tutorforge.core.errors import TutorforgeError

    registry, _ = _registry(store)
    try:
        removed = registry.remove(name, version)
    except TutorforgeError as error:
        err_console.print(f"[bold red]error[/] {error.code.name}: {error.message}")
        raise typer.Exit(code=2) from None
    console.print(f"removed {name} {', '.join(removed)}")


@adapters_app.command("load")
def load_adapter(
    name: Annotated[str, typer.Argument(help="Adapter name.")],
    version: Annotated[str, typer.Option(help="Version (default: latest).")] = "",
    address: AddressOption = DEFAULT_ADDRESS,
    json: JsonOption = False,
) -> None:
    """Load an adapter into the serving engine."""
    with rpc_errors():
        adapter = _client(address).load_adapter(name, version)
    print_json(adapter) if json else console.print(f"loaded [bold]{adapter.name}[/] {adapter.version}")


@adapters_app.command("unload")
def unload_adapter(
    name: Annotated[str, typer.Argument(help="Adapter name.")],
    address: AddressOption = DEFAULT_ADDRESS,
    json: JsonOption = False,
) -> None:
    """Unload an adapter from the serving engine (it stays in the registry)."""
    with rpc_errors():
        adapter = _client(address).unload_adapter(name)
    print_json(adapter) if json else console.print(f"unloaded [bold]{adapter.name}[/]")
