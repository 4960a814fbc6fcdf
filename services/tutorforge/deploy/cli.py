"""`tutorforge adapters deploy NAME`: the rollout joins the `adapters` group the inference service's CLI
contributes (the registry commands), since deploying is one more thing done to an adapter."""

from __future__ import annotations

from typing import Annotated

import typer

from tutorforge.core.cli_support import JsonOption, console, err_console, print_json


def register(app: typer.Typer) -> None:
    adapters = next(group.typer_instance for group in app.registered_groups if group.name == "adapters")
    adapters.command("deploy")(deploy_adapter)


def deploy_adapter(
    name: Annotated[str, typer.Argument(help="Adapter name in the registry.")],
    version: Annotated[str, typer.Option(help="Version (default: latest).")] = "",
    namespace: Annotated[str, typer.Option(help="Namespace of the TGI Deployment (default: current).")] = "",
    deployment: Annotated[str, typer.Option(help="TGI Deployment (default: from inference.engine_url).")] = "",
    wait: Annotated[bool, typer.Option(help="Wait until the rolled pods are available.")] = False,
    json: JsonOption = False,
) -> None:
    """Make the cluster's engine serve NAME: TGI gets it in LORA_ADAPTERS and rolls; vLLM loads it."""
    from dataclasses import asdict

    from tutorforge.core.errors import TutorforgeError
    from tutorforge.core.settings import Settings
    from tutorforge.deploy.rollout import deploy_adapter as deploy

    try:
        result = deploy(name, Settings(), namespace, deployment, version, wait=wait, on_progress=lambda line: err_console.print(f"[dim]{line}[/]"))
    except TutorforgeError as error:
        err_console.print(f"[bold red]error[/] {error.code.name}: {error.message}")
        raise typer.Exit(code=2) from None
    message = result.message or f"{result.adapter} {result.version} deployed to {result.target}"
    print_json(asdict(result)) if json else console.print(message)
