"""Models-from-code entry file: MLflow copies it into every logged controller model and
executes it at load time. The controller itself is data (``model_config`` and the source
artifact), read by ``ControllerModel.load_context``, which first checks this file's folder
(the model) against the digest recorded at registration."""

from pathlib import Path

import mlflow

from mlflow_autotts.serving.pyfunc import ControllerModel

mlflow.models.set_model(ControllerModel(Path(__file__).resolve().parent))
