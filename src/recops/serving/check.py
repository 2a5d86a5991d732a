"""The serving check a challenger passes before ``recops promote`` accepts it.

The candidate is loaded exactly as ``recops serve`` loads a model, put behind the real application
(:func:`recops.serving.app.create_app`) in a uvicorn server on a loopback port, and sent a smoke set drawn
from its own catalog (``serving.check`` in params.yaml):

* ``users`` known users -- a full list, no item of the user's history, ``fallback: false`` unless the user
  has no history;
* ``unknown_users`` ids the model never saw -- the popularity fallback, flagged ``unknown_user``;
* ``sessions`` anonymous sessions (the last items of sampled users) -- the posted items excluded;
* ``similar_items`` items -- a list without the item itself.

Every answer must be HTTP 200 from the expected ``model_version`` with distinct catalog items, finite
scores best first and the expected length (``k``, or fewer when exclusions leave fewer items). The smoke set
is sent ``warmup_rounds`` times unmeasured, then ``rounds`` times one request at a time, and the p99 of
the measured latencies (client-side, request to last byte) must be within ``p99_budget_ms``. Anything else
fails the check with every reason named.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from recops.registry import RegistryError

if TYPE_CHECKING:
    from recops.recommender import Recommender
    from recops.serving.params import ServingParams

__all__ = ["ServingCheckFailed", "ServingCheckResult", "SmokeRequest", "check_recommender", "check_registered",
           "smoke_set"]

MAX_LISTED_FAILURES = 20


class ServingCheckFailed(RegistryError):
    """The challenger failed the serving check: the promotion is refused."""


@dataclass(frozen=True)
class SmokeRequest:
    """One request of the smoke set and what a correct answer looks like."""

    method: str
    path: str
    body: dict[str, Any] | None
    expected_len: int
    excluded: frozenset[str] = frozenset()
    fallback: bool | None = None  # None: not checked
    fallback_reason: str | None = None

    def label(self) -> str:
        return f"{self.method} {self.path}" + (f" {json.dumps(self.body)}" if self.body is not None else "")


@dataclass(frozen=True)
class ServingCheckResult:
    model: str
    version: str
    passed: bool
    budget_ms: float
    requests: int = 0
    failed_requests: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    reasons: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # the first MAX_LISTED_FAILURES failed requests
    checked_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The figures without the per-request failures (for a registry tag)."""
        return {k: v for k, v in self.as_dict().items() if k != "failures"}

    def message(self) -> str:
        head = f"serving check of {self.model} version {self.version}"
        figures = (f"{self.requests} requests, p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms "
                   f"(budget {self.budget_ms:g} ms)" if self.p99_ms is not None else "no request measured")
        if self.passed:
            return f"{head} passed: {figures}"
        lines = [f"{head} FAILED ({figures}):", *(f"  - {r}" for r in self.reasons)]
        lines += [f"    {f}" for f in self.failures[:5]]
        if self.failed_requests > 5:
            lines.append(f"    ... {self.failed_requests - 5} more failed requests")
        return "\n".join(lines)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def smoke_set(rec: Recommender, params: ServingParams) -> list[SmokeRequest]:
    """The requests of the check, drawn (seeded) from the model's own users and items."""
    import numpy as np

    check = params.check
    k = check.k
    rng = np.random.default_rng(check.seed)
    out: list[SmokeRequest] = []
    n_items = rec.n_items

    users = [rec.user_ids[i] for i in rng.permutation(len(rec.user_ids))[: check.users]]
    for user in users:
        seen = frozenset(rec.history(user))
        out.append(SmokeRequest("GET", f"/v1/users/{quote(user, safe='')}/recommendations?k={k}", None,
                                min(k, n_items - len(seen)) if seen else min(k, n_items), seen,
                                fallback=not seen, fallback_reason="empty_history" if not seen else None))
    taken = set(rec.user_ids)
    for i in range(check.unknown_users):
        user = f"recops-serving-check-unknown-{i}"
        while user in taken:
            user += "x"
        out.append(SmokeRequest("GET", f"/v1/users/{quote(user, safe='')}/recommendations?k={k}", None,
                                min(k, n_items), fallback=True, fallback_reason="unknown_user"))

    with_history = [u for u in users if rec.history(u)]
    for j in range(check.sessions):
        if not with_history:
            break
        items = rec.history(with_history[j % len(with_history)])[-(1 + j % 5):]
        out.append(SmokeRequest("POST", "/v1/recommendations", {"item_ids": items, "k": k},
                                min(k, n_items - len(set(items))), frozenset(items), fallback=False))

    if n_items >= 2:
        for idx in rng.permutation(n_items)[: check.similar_items]:
            item = rec.item_ids[int(idx)]
            out.append(SmokeRequest("GET", f"/v1/items/{quote(item, safe='')}/similar?k={k}", None,
                                    min(k, n_items - 1), frozenset([item])))
    return out


def _problem(req: SmokeRequest, status: int, body: bytes, version: str, catalog: set[str]) -> str | None:
    """What is wrong with one answer (None: nothing)."""
    if status != 200:
        return f"HTTP {status}: {body[:300].decode(errors='replace')}"
    try:
        data = json.loads(body)
    except ValueError:
        return f"the body is not JSON: {body[:120]!r}"
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        return "the body has no 'items' list"
    if data.get("model_version") != version:
        return f"answered by model_version {data.get('model_version')!r}, expected {version!r}"
    items = data["items"]
    ids = [it.get("item_id") for it in items if isinstance(it, dict)]
    scores = [it.get("score") for it in items if isinstance(it, dict)]
    if len(ids) != len(items) or not all(isinstance(s, int | float) and math.isfinite(s) for s in scores):
        return "items without an item_id or a finite score"
    if len(ids) != req.expected_len:
        return f"{len(ids)} items, expected {req.expected_len}"
    if len(set(ids)) != len(ids):
        return "duplicate items"
    if unknown := [i for i in ids if i not in catalog]:
        return f"items outside the model's catalog: {unknown[:5]}"
    if seen := [i for i in ids if i in req.excluded]:
        return f"excluded items recommended: {seen[:5]}"
    if any(a < b for a, b in zip(scores, scores[1:], strict=False)):
        return "scores are not in descending order"
    if req.fallback is not None and data.get("fallback") is not req.fallback:
        return f"fallback is {data.get('fallback')!r}, expected {req.fallback}"
    if req.fallback_reason is not None and data.get("fallback_reason") != req.fallback_reason:
        return f"fallback_reason is {data.get('fallback_reason')!r}, expected {req.fallback_reason!r}"
    return None


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def check_recommender(rec: Recommender, version: str, params: ServingParams, *,
                      model: str = "model") -> ServingCheckResult:
    """Serve ``rec`` as ``version`` through the real application on a loopback port and run the smoke set."""
    from recops.serving.app import create_app
    from recops.serving.holder import LoadedModel, ModelHolder
    from recops.serving.server import run_in_thread

    check = params.check
    requests = smoke_set(rec, params)
    catalog = set(rec.item_ids)
    holder = ModelHolder(LoadedModel(version=version, recommender=rec, source=f"serving check of {model}",
                                     loaded_at=time.time()))
    app = create_app(holder, params)
    latencies: list[float] = []
    failures: list[str] = []
    failed = 0
    with run_in_thread(app) as url:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            def send(req: SmokeRequest) -> tuple[int, bytes]:
                body = None if req.body is None else json.dumps(req.body).encode()
                headers = {"Content-Type": "application/json"} if body is not None else {}
                conn.request(req.method, req.path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()

            for _ in range(check.warmup_rounds):  # unmeasured: first calls of each code path
                for req in requests:
                    try:
                        send(req)
                    except (OSError, http.client.HTTPException):
                        conn.close()  # the measured rounds report it
            for _ in range(check.rounds):
                for req in requests:
                    start = time.perf_counter()
                    try:
                        status, body = send(req)
                    except (OSError, http.client.HTTPException) as err:
                        conn.close()  # reconnects on the next request
                        status, body = 0, f"no answer: {err!r}".encode()
                    latencies.append((time.perf_counter() - start) * 1000.0)
                    problem = _problem(req, status, body, version, catalog)
                    if problem is not None:
                        failed += 1
                        if len(failures) < MAX_LISTED_FAILURES:
                            failures.append(f"{req.label()}: {problem}")
        finally:
            conn.close()

    reasons = []
    if not requests:
        reasons.append("the model has no user and no item to build a smoke set from")
    if failed:
        reasons.append(f"{failed} of {len(latencies)} requests got a wrong answer")
    p99 = round(_percentile(latencies, 99), 3) if latencies else None
    if p99 is not None and p99 > check.p99_budget_ms:
        reasons.append(f"p99 latency {p99:.2f} ms exceeds the budget of {check.p99_budget_ms:g} ms")
    return ServingCheckResult(
        model=model, version=str(version), passed=not reasons, budget_ms=check.p99_budget_ms,
        requests=len(latencies), failed_requests=failed,
        p50_ms=round(_percentile(latencies, 50), 3) if latencies else None,
        p99_ms=p99,
        max_ms=round(max(latencies), 3) if latencies else None,
        reasons=reasons, failures=failures, checked_at=_now(),
    )


def check_registered(params: ServingParams, name: str, version: str) -> ServingCheckResult:
    """Download ``models:/name/version``, load it as the server does and check it. A model that cannot be
    downloaded or loaded fails the check (the reason says why)."""
    from recops.serving.holder import ModelLoadError, load_registered

    try:
        rec = load_registered(name, str(version))
    except ModelLoadError as err:
        return ServingCheckResult(model=name, version=str(version), passed=False, budget_ms=params.check.p99_budget_ms,
                                  reasons=[str(err)], checked_at=_now())
    return check_recommender(rec, str(version), params, model=name)
