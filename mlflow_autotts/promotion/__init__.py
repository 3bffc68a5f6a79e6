"""Promotion: whether a candidate controller may replace the incumbent (``autotts promote``).

The rule, the replay of both versions, the decision and its report live here, free of
MLflow, so that changing how promotion decides starts here and is tested without a
registry; ``tracking.model_registry`` reads the versions from MLflow, calls ``gate`` and
writes what it returns (tags, description, the alias move).
"""
