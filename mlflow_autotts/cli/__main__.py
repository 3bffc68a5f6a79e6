from mlflow_autotts.cli.main import console

console()
