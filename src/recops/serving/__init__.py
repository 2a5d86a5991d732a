"""Serving the champion over HTTP.

* :mod:`recops.serving.params` -- ``serving:`` of params.yaml (``ServingParams``);
* :mod:`recops.serving.holder` -- model sources (registry alias, local file), the atomically swappable
  (version, Recommender) reference and the poller that hot-swaps a new version;
* :mod:`recops.serving.app` -- the FastAPI application (``create_app``);
* :mod:`recops.serving.server` -- uvicorn in this process (``recops serve``) or in a thread on loopback;
* :mod:`recops.serving.check` -- the serving check a challenger passes before ``recops promote``.

Importing this package imports nothing heavy; each module loads FastAPI / torch / MLflow itself.
"""
