"""Trajectory collection: questions in, a validated Parquet replay file out (``autotts collect``)."""
