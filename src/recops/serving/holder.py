"""Where the served model comes from, the reference requests read it through, and hot reload.

* A **source** says which version should be served now (``resolve``) and builds a
  :class:`~recops.recommender.Recommender` for a version (``load``): :class:`RegistrySource` follows
  ``models:/<production_model>@champion``; :class:`FileSource` serves a local ``model.pt`` (its version is
  the file's content digest, so replacing the file is a new version).
* :class:`ModelHolder` holds one immutable :class:`LoadedModel` (version + recommender). A request reads
  ``holder.current`` once and uses that object to the end, so a swap never mixes two models in one answer
  and requests in flight finish on the model they started with.
* :class:`ModelPoller` resolves the source every ``poll_seconds`` in a background thread; a new version is
  downloaded and fully loaded (item embeddings included) before one reference assignment makes it
  current. A version that fails to load leaves the current model serving and is retried on the next poll.
  In the server process (``freeze_gc=True``) it then calls ``gc.freeze()``, so full garbage collections no
  longer rescan the model and the imported libraries.
"""

from __future__ import annotations

import gc
import hashlib
import io
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from recops.recommender import Recommender

log = logging.getLogger(__name__)

__all__ = ["FileSource", "LoadedModel", "ModelHolder", "ModelLoadError", "ModelPoller", "ModelSource",
           "RegistrySource", "load_registered"]


class ModelLoadError(RuntimeError):
    """A model version could not be looked up, downloaded or loaded."""


@dataclass(frozen=True)
class LoadedModel:
    """One servable model: never mutated after it is built, so it can be shared by concurrent requests."""

    version: str
    recommender: Recommender
    source: str
    loaded_at: float  # unix time


class ModelSource(Protocol):
    def resolve(self) -> str | None:
        """The version that should be served now; None when there is none (e.g. no champion yet)."""

    def load(self, version: str) -> Recommender:
        """A ready recommender for ``version`` (raises :class:`ModelLoadError`)."""

    def describe(self) -> str:
        """Where models come from, for messages and metrics."""


def _recommender_from_bytes(data: bytes, what: str) -> Recommender:
    import torch

    from recops.recommender import Recommender

    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return Recommender.from_payload(payload)
    except Exception as err:
        raise ModelLoadError(f"{what} is not a loadable recops model.pt: {err}") from err


def load_registered(name: str, version: str) -> Recommender:
    """Download ``models:/name/version`` (tracking URI from ``recops.tracking``) and build its recommender
    (``version`` attribute set)."""
    from recops import tracking

    uri = f"models:/{name}/{version}"
    tmp = Path(tempfile.mkdtemp(prefix="recops-serve-"))
    try:
        try:
            path = tracking.download_model_file(name, str(version), tmp)
        except FileNotFoundError as err:
            raise ModelLoadError(str(err)) from err
        except Exception as err:
            raise ModelLoadError(f"could not download {uri}: {err}") from err
        rec = _recommender_from_bytes(path.read_bytes(), uri)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rec.version = str(version)
    return rec


class RegistrySource:
    """``models:/<name>@<alias>`` in the MLflow registry at ``tracking.tracking_uri()``."""

    def __init__(self, name: str, alias: str = "champion") -> None:
        self.name = name
        self.alias = alias
        self._client: Any = None

    def describe(self) -> str:
        return f"models:/{self.name}@{self.alias}"

    def _mlflow(self) -> Any:
        if self._client is None:
            from recops import tracking

            self._client = tracking.client()
        return self._client

    def resolve(self) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self._mlflow().get_model_version_by_alias(self.name, self.alias)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None  # no such model or alias yet
            raise
        return str(mv.version)

    def load(self, version: str) -> Recommender:
        return load_registered(self.name, version)


class FileSource:
    """A local ``model.pt``; its version is ``sha256:<first 12 hex digits>`` of the file's bytes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return str(self.path)

    @staticmethod
    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()[:12]

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as err:
            raise ModelLoadError(f"{self.path}: cannot read the model file: {err}") from err

    def resolve(self) -> str | None:
        if not self.path.exists():
            return None
        return self.digest(self._read())

    def load(self, version: str) -> Recommender:
        data = self._read()
        found = self.digest(data)
        if found != version:
            raise ModelLoadError(f"{self.path} changed while loading (expected {version}, read {found})")
        rec = _recommender_from_bytes(data, str(self.path))
        rec.version = version
        return rec


class ModelHolder:
    """The one reference requests read the served model through (see the module docstring)."""

    def __init__(self, initial: LoadedModel | None = None) -> None:
        self._current = initial
        self._lock = threading.Lock()
        self.swaps = 0

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Make ``model`` current (one reference assignment); returns the model it replaced."""
        with self._lock:
            previous, self._current = self._current, model
            self.swaps += 1
        log.info("serving model version %s from %s (was %s)", model.version, model.source,
                 previous.version if previous else "none")
        return previous


class ModelPoller:
    """Keeps ``holder`` on the version ``source.resolve()`` names (see the module docstring)."""

    def __init__(self, holder: ModelHolder, source: ModelSource, poll_seconds: float, *,
                 freeze_gc: bool = False) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds={poll_seconds} must be > 0")
        self.holder = holder
        self.source = source
        self.poll_seconds = float(poll_seconds)
        self.freeze_gc = freeze_gc
        self.polls = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _failed(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        current = self.holder.current
        log.warning("%s (still serving %s)", message, f"version {current.version}" if current else "nothing")

    def poll_once(self) -> bool:
        """Look the version up and, when it changed, load it and swap. True when a swap happened."""
        self.polls += 1
        where = self.source.describe()
        try:
            version = self.source.resolve()
        except Exception as err:
            self._failed(f"could not look up {where}: {err}")
            return False
        current = self.holder.current
        if version is None:
            if current is None:
                self.last_error = f"{where} names no model yet"
            return False
        if current is not None and current.version == version:
            self.last_error = None
            return False
        try:
            rec = self.source.load(version)
        except Exception as err:
            self._failed(f"could not load version {version} from {where}: {err}")
            return False
        self.holder.swap(LoadedModel(version=version, recommender=rec, source=where, loaded_at=time.time()))
        self.last_error = None
        if self.freeze_gc:
            # Move everything alive now (imports, the new model) out of the cyclic GC's reach: otherwise every
            # full collection rescans it, a pause of a few hundred ms for every request in flight.
            gc.freeze()
        return True

    def _run(self) -> None:
        while True:
            try:
                self.poll_once()
            except Exception:  # never let the thread die: the server keeps serving the current model
                log.exception("model poll failed")
            if self._stop.wait(self.poll_seconds):
                return

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="recops-model-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
