"""``autotts serve MODEL_URI``: a registered controller as an OpenAI-compatible endpoint.

Wires the two sides, as ``autotts search`` does: ``tracking.resolve.fetch_model`` downloads
the model and checks every file against the digest recorded at registration (the same check
``mlflow models serve`` makes inside the model, made here by the installed package before the
model is read), then ``serving.endpoint`` sets the installed ``ControllerModel`` up from the
checked config and source (built-in and API-key checks) and serves it on uvicorn. Its options
are generated from ``ServeConfig`` (``cli/options.py``).
"""

from __future__ import annotations

import os

import click

from mlflow_autotts.cli.options import settings_options
from mlflow_autotts.serving.endpoint.config import ServeConfig
from mlflow_autotts.serving.endpoint.tracing import MLFLOW_TRACE_EXPORT


def load_served(config: ServeConfig):
    """The checked model at ``config.model_uri``, set up to serve (``ServedModel``)."""
    from mlflow.models import Model

    from mlflow_autotts.serving.endpoint.app import ServedModel
    from mlflow_autotts.tracking.resolve import fetch_model

    fetched = fetch_model(config.model_uri)  # digest checked before MLmodel is parsed
    ref = fetched.ref
    ids = (config.served_model_name or ref.name or config.model_uri, config.model_uri)
    info = {"model_uri": config.model_uri, "registered_name": ref.name, "version": ref.version,
            "model_sha256": fetched.digest}
    return ServedModel.from_config(fetched.config, fetched.source_path, Model.load(str(fetched.path / "MLmodel")),
                                   ids, info)


@click.command("serve")
@settings_options(ServeConfig, flags={"host": ("--host", "-h"), "port": ("--port", "-p")}, arguments=("model_uri",))
def serve_cmd(config: ServeConfig) -> None:
    """Serve MODEL_URI (a registered controller, e.g. models:/autotts-controller@champion) as an
    OpenAI-compatible endpoint: /v1/chat/completions, /v1/responses, /v1/models, /health, and
    /invocations as mlflow models serve answers it; one MLflow trace per request."""
    from mlflow_autotts.serving.endpoint.app import build_app, serve

    for name, value in MLFLOW_TRACE_EXPORT.items():  # MLflow's export of the endpoint's traces
        os.environ.setdefault(name, value)
    served = load_served(config)
    app = build_app(served, config)
    click.echo(f"serving {config.model_uri} as model {served.model_ids[0]!r} ({served.info['controller']}, "
               f"beta {served.default_beta:g}, requests may ask {config.request.min_beta:g}..{config.request.max_beta:g}) "
               f"at http://{config.host}:{config.port}/v1", err=True)
    serve(app, config)
