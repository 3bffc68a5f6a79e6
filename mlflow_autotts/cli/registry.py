"""``autotts register`` and ``autotts promote`` (attached to the root group in ``mlflow_autotts.cli``).

Errors from the user's input raise ``AutoTTSError`` and the root group prints them as one
line with exit status 2; a promotion refused by the gate prints why and exits 1.
"""

from __future__ import annotations

import click

from mlflow_autotts.tracking.registry import DEFAULT_EXPERIMENT, DEFAULT_NAME


@click.command("register")
@click.argument("controller")
@click.option("--beta", type=float, default=None, help="β in [0, 1] (default: the controller's own).")
@click.option("--param", "params", multiple=True, help="Controller parameter k=v (repeatable).")
@click.option("--name", default=DEFAULT_NAME, show_default=True, help="Registered model name.")
@click.option("--alias", "aliases", multiple=True, help="Alias to set on the new version (repeatable).")
@click.option("--experiment", default=DEFAULT_EXPERIMENT, show_default=True, help="MLflow experiment of the run.")
@click.option("--description", default=None, help="Description of the new version.")
def register_cmd(controller: str, beta: float | None, params: tuple[str, ...], name: str, aliases: tuple[str, ...],
                 experiment: str, description: str | None) -> None:
    """Log CONTROLLER (a registered name, path.py[:Class], or a model URI to re-register) as an
    MLflow model and register it as a new version."""
    from dataclasses import replace

    from mlflow_autotts.cli.common import parse_params, split_multi
    from mlflow_autotts.controllers.loading import ControllerSpec
    from mlflow_autotts.tracking.registry import register
    from mlflow_autotts.tracking.resolve import is_model_uri, spec_from_model_uri

    extra = parse_params(params)
    if is_model_uri(controller):
        base = spec_from_model_uri(controller)
        spec = replace(base, beta=base.beta if beta is None else beta, params={**base.params, **extra})
    else:
        spec = ControllerSpec(controller, beta, extra)
    reg = register(spec, name=name, aliases=split_multi(aliases), experiment=experiment, description=description)
    settings = ([f"beta {reg.config['beta']:g}"] if reg.config.get("uses_beta", True) else []) + \
        [f"{k}={v}" for k, v in reg.config["params"].items()]
    click.echo(f"registered {reg.name} version {reg.version}: {reg.controller}"
               + (f" ({', '.join(settings)})" if settings else ""))
    click.echo(f"  {reg.model_uri}  (run {reg.run_id})")
    for a in reg.aliases:
        click.echo(f"  models:/{reg.name}@{a}")


@click.command("promote")
@click.option("--from", "from_alias", default="challenger", show_default=True, help="Alias of the candidate.")
@click.option("--to", "to_alias", default="champion", show_default=True, help="Alias to move if the gate passes.")
@click.option("--gate", "gate", multiple=True, required=True,
              help="Gate dataset URI (repeatable or comma-separated): files, folders, autotts:<model>/<benchmark>.")
@click.option("--shuffles", default=100, show_default=True, type=click.IntRange(min=1), help="Replay runs per dataset.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0),
              help="Worker processes (0 = all cores).")
@click.option("--max-accuracy-drop", default=0.0, show_default=True, type=float,
              help="Points of mean accuracy the candidate may lose against the incumbent.")
@click.option("--max-token-ratio", default=1.0, show_default=True, type=float,
              help="Largest candidate/incumbent ratio of mean tokens.")
@click.option("--name", default=DEFAULT_NAME, show_default=True, help="Registered model name.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.pass_context
def promote_cmd(ctx: click.Context, from_alias: str, to_alias: str, gate: tuple[str, ...], shuffles: int, workers: int,
                max_accuracy_drop: float, max_token_ratio: float, name: str, progress: bool) -> None:
    """Replay the --from and --to versions on the gate data; move --to to the candidate only if
    it keeps accuracy and tokens within the limits (exit 1 when refused)."""
    from mlflow_autotts.cli.common import split_multi
    from mlflow_autotts.tracking.registry import GateConfig, gate_table, promote

    config = GateConfig(max_accuracy_drop=max_accuracy_drop, max_token_ratio=max_token_ratio, shuffles=shuffles,
                        workers=workers or None, progress=progress)
    decision = promote(name, from_alias, to_alias, split_multi(gate), config)
    click.echo(gate_table(decision))
    c = decision.candidate
    if decision.passed:
        click.echo(f"promoted: {name} v{c.version} is now @{to_alias}: {decision.reason}")
        return
    inc = decision.incumbent
    click.echo(f"refused: {name} v{c.version} (@{from_alias}) does not replace v{inc.version if inc else '?'} "
               f"(@{to_alias}): {decision.reason}")
    ctx.exit(1)
