"""Controllers: the base class, a registry by name, the reference controllers.

Importing the package registers the built-in controllers; the registry itself imports no
implementation (``docs/architecture.md``, "Where to add things").
"""

from mlflow_autotts.controllers import baselines, cmc, deepconf, parallel_probe  # noqa: F401  (register on import)
