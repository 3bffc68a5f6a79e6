"""mlflow-autotts: discover, ship and serve test-time-scaling controllers for reasoning LLMs."""

__version__ = "0.1.0"
