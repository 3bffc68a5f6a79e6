"""Serving a logged controller: the pyfunc ``ControllerModel``, request parsing, and the two
seams it dispatches through (a controller runner, chosen by where the code comes from, and
generation backends by name); see ``docs/architecture.md``, "Models, registry, serving".

This layer is what a logged model ships and imports at serve time: it never imports
``mlflow_autotts.tracking`` (which logs models and imports this layer), and its modules
import MLflow only where the pyfunc interface needs it (``pyfunc``).
"""
