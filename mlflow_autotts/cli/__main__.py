import sys

from mlflow_autotts.cli.main import main

sys.exit(main())
