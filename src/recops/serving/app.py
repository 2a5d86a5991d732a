"""The recops HTTP API: ``create_app(holder, params, poller)`` builds one FastAPI application.

Endpoints (every answer names the ``model_version`` that computed it, also in the ``X-Model-Version``
header):

* ``GET /v1/users/{user_id}/recommendations?k=10`` -- top-k for a user, items of the user's stored history
  excluded; an unknown user (or one without history) gets the popularity ranking with ``fallback: true``
  and ``fallback_reason``.
* ``POST /v1/recommendations`` with ``{"item_ids": [...], "k": 10}`` -- top-k for an anonymous session
  (chronological item ids); the posted items are excluded, ids unknown to the model are ignored and
  listed in ``ignored_item_ids``; with no known item the answer is the popularity fallback.
* ``GET /v1/items/{item_id}/similar?k=10`` -- nearest items by embedding cosine; unknown item -> 404.
* ``GET /healthz`` (the process is up), ``GET /readyz`` (503 until a model is loaded), ``GET /metrics``
  (Prometheus text: requests by route/method/status, latency histograms, fallbacks, served version).

``k`` is bounded by ``serving.max_k``; malformed requests get a 4xx with an :class:`ErrorResponse` body
naming every offending field. Each application owns its Prometheus registry: nothing is registered
globally, so several applications (tests, the serving check) live side by side in one process.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime, and some
# of them are aliases local to ``create_app`` (bounds come from params).
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from recops.serving.holder import LoadedModel, ModelHolder, ModelPoller
from recops.serving.params import ServingParams

__all__ = ["API_VERSION", "ErrorResponse", "ServingError", "create_app"]

API_VERSION = "1"
MODEL_VERSION_HEADER = "X-Model-Version"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
UNMATCHED_ROUTE = "<unmatched>"

FallbackReason = Literal["unknown_user", "empty_history", "no_known_items", "popularity_model"]


# --------------------------------------------------------------------------------------------- schemas


class ScoredItem(BaseModel):
    item_id: str = Field(description="Item id as in the training data.")
    score: float = Field(description="Model score (higher is better); the popularity count for fallbacks.")


class _Answer(BaseModel):
    model_version: str = Field(description="Version of the model that computed this answer.")
    k: int = Field(description="List length asked for; `items` is shorter only when the catalog runs out.")
    fallback: bool = Field(description="True when `items` is the popularity ranking, not a personal one.")
    fallback_reason: FallbackReason | None = Field(
        description="Why the fallback was used: unknown_user, empty_history, no_known_items (session) or "
                    "popularity_model (the served model is the popularity baseline). null when not a fallback.")
    items: list[ScoredItem] = Field(description="Ranked best first.")


class UserRecommendations(_Answer):
    user_id: str


class SessionRecommendations(_Answer):
    ignored_item_ids: list[str] = Field(description="Posted ids the model does not know (not used, not excluded).")


class SimilarItems(_Answer):
    item_id: str


class FieldError(BaseModel):
    location: str = Field(description="Where the problem is, e.g. `query.k` or `body.item_ids.3`.")
    message: str
    type: str = Field(description="Machine-readable error type (pydantic's).")


class ErrorResponse(BaseModel):
    error: str = Field(description="Machine-readable code: invalid_request, unknown_item, not_ready, not_found, ...")
    detail: str = Field(description="What is wrong, in words.")
    errors: list[FieldError] = Field(default_factory=list, description="One entry per invalid field (422 only).")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    model_version: str | None = None
    model_kind: str | None = None
    model_source: str | None = None
    loaded_at: float | None = Field(default=None, description="Unix time the served model was loaded.")
    detail: str | None = Field(default=None, description="Why the server is not ready.")


class ServingError(Exception):
    """An error answer with an :class:`ErrorResponse` body."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


# --------------------------------------------------------------------------------------------- metrics


class _ModelCollector(Collector):
    """Served-model gauges, read from the holder / poller at scrape time."""

    def __init__(self, holder: ModelHolder, poller: ModelPoller | None) -> None:
        self.holder, self.poller = holder, poller

    def collect(self) -> Iterable[Any]:
        current = self.holder.current
        info = GaugeMetricFamily("recops_model_info", "The served model (value 1), by version, kind and source.",
                                 labels=["version", "kind", "source"])
        numeric = GaugeMetricFamily("recops_model_version",
                                    "Registry version of the served model (0: none, or not a number).")
        loaded = GaugeMetricFamily("recops_model_loaded_timestamp_seconds", "When the served model was loaded.")
        if current is not None:
            info.add_metric([current.version, current.recommender.kind, current.source], 1.0)
            numeric.add_metric([], float(current.version) if current.version.isdigit() else 0.0)
            loaded.add_metric([], current.loaded_at)
        else:
            numeric.add_metric([], 0.0)
        swaps = CounterMetricFamily("recops_model_swaps", "Times a newly loaded model replaced the served one.")
        swaps.add_metric([], float(self.holder.swaps))
        failures = CounterMetricFamily("recops_model_load_failures",
                                       "Failed look-ups or loads of a new model version (the old one kept serving).")
        failures.add_metric([], float(self.poller.failures if self.poller else 0))
        return [info, numeric, loaded, swaps, failures]


class _Metrics:
    def __init__(self, holder: ModelHolder, poller: ModelPoller | None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("recops_http_requests", "HTTP requests by route template, method and status.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("recops_http_request_duration_seconds",
                                 "Time from request start to the end of the response, by route template.",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.fallbacks = Counter("recops_fallback_responses", "Answers that used the popularity fallback.",
                                 ["route", "reason"], registry=self.registry)
        self.registry.register(_ModelCollector(holder, poller))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _MetricsMiddleware:
    """Pure ASGI: counts and times every HTTP request under its route template (bounded label set)."""

    def __init__(self, app: Any, metrics: _Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            method = scope.get("method", "")
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - start)
            self.metrics.requests.labels(template, method, str(status)).inc()


# --------------------------------------------------------------------------------------------- app


def _error_response(status: int, error: str, detail: str, errors: list[FieldError] | None = None,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=error, detail=detail, errors=errors or [])
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _location(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in loc) or "request"


def _items(item_ids: list[str], scores: list[float], version: str) -> list[ScoredItem]:
    if not all(math.isfinite(s) for s in scores):
        raise ServingError(500, "model_error", f"model version {version} produced non-finite scores")
    return [ScoredItem(item_id=i, score=s) for i, s in zip(item_ids, scores, strict=True)]


def create_app(holder: ModelHolder, params: ServingParams | None = None, *,
               poller: ModelPoller | None = None) -> FastAPI:
    """The API over ``holder``. With a ``poller`` the application starts it on startup (first poll at once)
    and stops it on shutdown; without one, whoever owns the holder swaps models."""
    params = params or ServingParams()
    metrics = _Metrics(holder, poller)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if poller is not None:
            poller.start()
        try:
            yield
        finally:
            if poller is not None:
                poller.stop()

    app = FastAPI(
        title="recops",
        version=API_VERSION,
        summary="Top-k recommendations from the champion model, hot-swapped when the champion alias moves.",
        lifespan=lifespan,
    )
    app.state.holder, app.state.poller, app.state.metrics = holder, poller, metrics
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    id_len = params.max_id_length
    UserId = Annotated[str, Path(min_length=1, max_length=id_len, description="User id as in the training data.")]
    ItemIdPath = Annotated[str, Path(min_length=1, max_length=id_len, description="Item id as in the training data.")]
    ItemId = Annotated[str, StringConstraints(min_length=1, max_length=id_len)]
    KQuery = Annotated[int, Query(ge=1, le=params.max_k, description=f"List length, 1..{params.max_k}.")]

    class SessionRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={
            "examples": [{"item_ids": ["1", "260", "1196"], "k": params.default_k}]})

        item_ids: list[ItemId] = Field(max_length=params.max_session_items,
                                       description="The session's items, oldest first; unknown ids are ignored.")
        k: int = Field(default=params.default_k, ge=1, le=params.max_k, description=f"List length, 1..{params.max_k}.")

    errors_4xx: dict[int | str, dict[str, Any]] = {
        422: {"model": ErrorResponse, "description": "Malformed request: every invalid field is listed."},
        503: {"model": ErrorResponse, "description": "No model loaded yet."},
    }

    def served() -> LoadedModel:
        current = holder.current  # read once: this request uses this model to the end
        if current is None:
            why = poller.last_error if poller is not None and poller.last_error else "waiting for the first model"
            raise ServingError(503, "not_ready", f"no model loaded yet ({why})")
        return current

    def answered(answer: _Answer, route: str) -> Response:
        """The answer as JSON. It was validated when built, so FastAPI's second validation and encoding pass
        over ``response_model`` (which still documents it) is skipped: a good share of a request's cost."""
        if answer.fallback_reason is not None:
            metrics.fallbacks.labels(route, answer.fallback_reason).inc()
        return Response(content=answer.model_dump_json(), media_type="application/json",
                        headers={MODEL_VERSION_HEADER: answer.model_version})

    @app.exception_handler(ServingError)
    async def _serving_error(_: Request, exc: ServingError) -> JSONResponse:
        return _error_response(exc.status, exc.error, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [FieldError(location=_location(e.get("loc", ())), message=str(e.get("msg", "invalid")),
                             type=str(e.get("type", "invalid"))) for e in exc.errors()]
        detail = "; ".join(f"{e.location}: {e.message}" for e in errors) or "invalid request"
        return _error_response(422, "invalid_request", detail, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    user_route = "/v1/users/{user_id}/recommendations"

    @app.get(user_route, response_model=UserRecommendations, responses=errors_4xx, tags=["recommendations"],
             summary="Top-k items for a user (seen items excluded; popularity fallback for unknown users)")
    def user_recommendations(user_id: UserId, k: KQuery = params.default_k) -> Response:
        model = served()
        rec = model.recommender.recommend_user(user_id, k)
        reason: FallbackReason | None = None
        if rec.fallback:
            reason = "empty_history" if model.recommender.has_user(user_id) else "unknown_user"
        return answered(UserRecommendations(
            model_version=model.version, k=k, fallback=rec.fallback, fallback_reason=reason,
            items=_items(rec.item_ids, rec.scores, model.version), user_id=user_id), user_route)

    session_route = "/v1/recommendations"

    @app.post(session_route, response_model=SessionRecommendations, tags=["recommendations"],
              responses={400: {"model": ErrorResponse, "description": "The body cannot be decoded (not UTF-8 JSON)."},
                         **errors_4xx},
              summary="Top-k items for an anonymous session (posted items excluded)")
    def session_recommendations(request: SessionRequest) -> Response:
        model = served()
        recommender = model.recommender
        rec = recommender.recommend_history(request.item_ids, request.k)
        ignored = [i for i in request.item_ids if not recommender.has_item(i)]
        reason: FallbackReason | None = "no_known_items" if rec.fallback else None
        return answered(SessionRecommendations(
            model_version=model.version, k=request.k, fallback=rec.fallback, fallback_reason=reason,
            items=_items(rec.item_ids, rec.scores, model.version), ignored_item_ids=ignored), session_route)

    similar_route = "/v1/items/{item_id}/similar"

    @app.get(similar_route, response_model=SimilarItems, tags=["recommendations"],
             responses={404: {"model": ErrorResponse, "description": "The item is not in the model's catalog."},
                        **errors_4xx},
             summary="Items most similar to an item (the item itself excluded)")
    def similar_items(item_id: ItemIdPath, k: KQuery = params.default_k) -> Response:
        model = served()
        recommender = model.recommender
        if not recommender.has_item(item_id):
            raise ServingError(404, "unknown_item", f"item {item_id!r} is not in the catalog of model version "
                                                    f"{model.version} ({recommender.n_items} items)")
        rec = recommender.similar_items(item_id, k)
        reason: FallbackReason | None = "popularity_model" if rec.fallback else None
        return answered(SimilarItems(
            model_version=model.version, k=k, fallback=rec.fallback, fallback_reason=reason,
            items=_items(rec.item_ids, rec.scores, model.version), item_id=item_id), similar_route)

    @app.get("/healthz", response_model=Health, tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Readiness, tags=["operations"],
             responses={503: {"model": Readiness, "description": "No model loaded yet."}},
             summary="Readiness: 200 once a model is loaded, 503 before")
    async def readyz(response: Response) -> Readiness:
        current = holder.current
        if current is None:
            response.status_code = 503
            why = poller.last_error if poller is not None and poller.last_error else "waiting for the first model"
            return Readiness(status="not_ready", detail=f"no model loaded yet ({why})")
        response.headers[MODEL_VERSION_HEADER] = current.version
        return Readiness(status="ready", model_version=current.version, model_kind=current.recommender.kind,
                         model_source=current.source, loaded_at=current.loaded_at)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"],
             summary="Prometheus metrics (text exposition format)",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Request counts, latency histograms, fallbacks, served model."}})
    async def prometheus_metrics() -> Response:
        return Response(content=metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
