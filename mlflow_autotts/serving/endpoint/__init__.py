"""``autotts serve``: a registered controller as an OpenAI-compatible endpoint.

Split as vLLM's ``entrypoints/openai`` is: ``config`` (the command's settings), ``protocol``
(pure functions between request/response dicts and the episode: no server, no MLflow),
``app`` (the FastAPI routes and the worker pool that runs episodes).
"""
