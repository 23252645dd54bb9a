"""aiohttp glue: turn HTTP requests into ``Tenant`` evaluations and ``Outcome``s back into responses.

Kept lean on purpose (the hot path is a valid POST): no middleware, no access log, no pydantic, orjson for
bodies, one catch-all route under ``/beta`` dispatched by precompiled regexes in ``operations.py``.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from ..config import Rate
from .batch import evaluate_batch
from .config import EmulatorConfig
from .operations import Tenant
from .responses import RESET, Outcome, graph_error
from .state import new_guid

TENANT: web.AppKey[Tenant] = web.AppKey("tenant", Tenant)
_JSON = "application/json"
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def _deliver(request: web.Request, tenant: Tenant, outcome: Outcome, rid: str, crid: str) -> web.Response:
    """Send ``outcome`` (after any latency) or reset the connection when the outcome says so."""
    latency = tenant.config.latency_ms
    delay = outcome.delay + (latency / 1000.0 if latency else 0.0)
    if delay:
        await asyncio.sleep(delay)
    if outcome.action == RESET:
        transport = request.transport
        if transport is not None:
            transport.abort()  # the client sees ServerDisconnectedError / ClientOSError, never a status
        return web.Response(status=500)
    tenant.counters.status(outcome.status)
    body = outcome.body
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": _JSON, "request-id": rid, "client-request-id": crid}
    if outcome.headers:
        headers.update(outcome.headers)
    return web.Response(status=outcome.status, body=payload, headers=headers)


def _origin(request: web.Request) -> str:
    """The scheme and host the client called (``http://127.0.0.1:PORT``): Entra's bind references must name
    it, and the directory's next links point back to it."""
    return f"{request.scheme}://{request.host}"


async def graph_handler(request: web.Request) -> web.Response:
    """Every request under ``/beta``: authenticate, then evaluate as one operation or as a batch."""
    tenant = request.app[TENANT]
    tenant.counters.requests += 1
    crid = request.headers.get("client-request-id") or new_guid()
    rid = new_guid()
    path = request.path[5:]  # strip "/beta"
    info, reason = tenant.auth.check(request.headers.get("Authorization"), time.time())
    if info is None:
        return await _deliver(request, tenant, tenant.unauthorized(reason, rid, crid), rid, crid)
    method = request.method
    if path == "/$batch":
        if method != "POST":
            outcome = graph_error(405, "MethodNotAllowed", "$batch accepts POST only.", rid, crid)
            outcome.headers["Allow"] = "POST"
            return await _deliver(request, tenant, outcome, rid, crid)
        result = evaluate_batch(tenant, await request.read(), info.app, rid, crid, origin=_origin(request))
        response = await _deliver(request, tenant, result.outcome, rid, crid)
        if result.outcome.action != RESET and result.outcome.status == 200:
            for status in result.item_statuses:
                tenant.counters.status(status)
        return response
    body = await request.read() if method in _WRITE_METHODS else None
    outcome = tenant.evaluate(method, path, body, info.app, rid, crid, query=request.query, origin=_origin(request))
    return await _deliver(request, tenant, outcome, rid, crid)


async def fallback_handler(request: web.Request) -> web.Response:
    """Anything outside ``/beta`` and ``/_emulator``: a Graph-shaped 404 rather than aiohttp's text page."""
    tenant = request.app[TENANT]
    tenant.counters.requests += 1
    crid = request.headers.get("client-request-id") or new_guid()
    rid = new_guid()
    return await _deliver(request, tenant, tenant.not_found(request.path, rid, crid), rid, crid)


# -- admin routes (outside /beta, no auth: the emulator listens on loopback) ---------------------------


async def counters_handler(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[TENANT].counters.snapshot()), content_type=_JSON)


def _admin_error(message: str) -> web.Response:
    return web.Response(status=400, body=orjson.dumps({"error": message}), content_type=_JSON)


async def rates_handler(request: web.Request) -> web.Response:
    """``{"app": "50/20s", "tenant": "100/20s"}`` -> new budgets now; answers with the budgets in force."""
    tenant = request.app[TENANT]
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _admin_error('body must be JSON like {"app": "50/20s", "tenant": "100/20s"}')
    if not isinstance(payload, dict) or not set(payload) <= {"app", "tenant"}:
        return _admin_error("expected an object with 'app' and/or 'tenant'")
    try:
        app = Rate.parse(payload["app"]) if payload.get("app") is not None else None
        tenant_rate = Rate.parse(payload["tenant"]) if payload.get("tenant") is not None else None
    except ValueError as exc:
        return _admin_error(str(exc))
    tenant.budgets.set_rates(tenant.clock(), app=app, tenant=tenant_rate)
    budgets = tenant.budgets
    return web.Response(
        body=orjson.dumps({"app": str(budgets.app_rate), "tenant": str(budgets.tenant.rate)}), content_type=_JSON
    )


async def reset_handler(request: web.Request) -> web.Response:
    """Zero the counters; with ``?state=1`` also forget assignments, throttle and fault history."""
    tenant = request.app[TENANT]
    tenant.counters.reset()
    if request.query.get("state") in ("1", "true", "yes"):
        tenant.reset_state()
    return web.Response(body=orjson.dumps(tenant.counters.snapshot()), content_type=_JSON)


def build_app(config: EmulatorConfig, tenant: Tenant | None = None) -> web.Application:
    """The emulator as an ``aiohttp.web.Application`` (for ``web.run_app`` or an ``AppRunner``)."""
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[TENANT] = tenant if tenant is not None else Tenant(config)
    app.router.add_get("/_emulator/counters", counters_handler)
    app.router.add_post("/_emulator/rates", rates_handler)
    app.router.add_post("/_emulator/reset", reset_handler)
    app.router.add_route("*", "/beta/{tail:.*}", graph_handler)
    app.router.add_route("*", "/{tail:.*}", fallback_handler)
    return app
