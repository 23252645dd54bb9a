"""``POST /beta/$batch``: JSON batching with Graph's rules and Intune's failure modes.

Each item goes through ``Tenant.evaluate`` exactly like a standalone request (own throttle charge, own
Retry-After, own fault), with the outer request's identity. Whole-batch faults are decided from a hash of
the batch's content, so the same batch sent again under the same seed meets the same fate.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from .operations import DEFAULT_ORIGIN, Tenant
from .responses import RESET, Outcome, gateway_timeout, graph_error
from .state import new_guid

MAX_ITEMS = 20


@dataclass(slots=True)
class BatchResult:
    """The outer answer plus the statuses of the items inside it (counted only if the answer is delivered)."""

    outcome: Outcome
    item_statuses: list[int] = field(default_factory=list)


def _item_path(url: str) -> str | None:
    """An item url relative to ``/beta`` (with or without a leading slash) -> decoded path, else None."""
    if "://" in url or url.startswith("//"):
        return None
    path = unquote(urlsplit(url).path)
    return path if path.startswith("/") else "/" + path


def _invalid(message: str, rid: str, crid: str) -> BatchResult:
    return BatchResult(graph_error(400, "BadRequest", message, rid, crid))


def _parse(raw: bytes, rid: str, crid: str) -> tuple[list[dict[str, Any]], BatchResult | None]:
    """The validated ``requests`` list, or the 400 answer for the whole batch."""
    try:
        payload = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return [], _invalid("Invalid JSON in the batch request body.", rid, crid)
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list) or not requests:
        return [], _invalid("A batch needs a non-empty 'requests' array.", rid, crid)
    if len(requests) > MAX_ITEMS:
        message = f"The number of batch requests ({len(requests)}) exceeds the limit of {MAX_ITEMS}."
        return [], _invalid(message, rid, crid)
    seen: set[str] = set()
    for item in requests:
        if not isinstance(item, dict):
            return [], _invalid("Each batch request must be a JSON object.", rid, crid)
        item_id, method, url = item.get("id"), item.get("method"), item.get("url")
        if not isinstance(item_id, str) or not item_id:
            return [], _invalid("Each batch request needs a non-empty string 'id'.", rid, crid)
        if not isinstance(method, str) or not isinstance(url, str) or _item_path(url) is None:
            return [], _invalid(f"Batch request '{item_id}' needs a 'method' and a relative 'url'.", rid, crid)
        if item_id in seen:
            return [], _invalid(f"Batch request ids must be unique; '{item_id}' appears twice.", rid, crid)
        seen.add(item_id)
    return requests, None


def _commits(tenant: Tenant) -> int:
    """Writes that changed the tenant so far: assignments (made or deleted) and directory memberships."""
    counters = tenant.counters
    return counters.writes_committed + counters.directory_commits + counters.assignments_deleted + \
        counters.profile_assignments_deleted


def _content_key(requests: list[dict[str, Any]]) -> str:
    """Identifies a batch by what it asks for (not by arrival order or item ids)."""
    lines = sorted(f"{item['method'].upper()} {_item_path(item['url'])}" for item in requests)
    return "batch:" + hashlib.blake2b("\n".join(lines).encode(), digest_size=12).hexdigest()


def _item_query(url: str) -> dict[str, str]:
    """An item url's query options (``$select``, ``$top``, ...), as a standalone request would have them."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def evaluate_batch(tenant: Tenant, raw: bytes, app: str, rid: str, crid: str, *,
                   origin: str = DEFAULT_ORIGIN) -> BatchResult:
    """Judge a whole batch (the caller has already authenticated the outer request); ``origin`` is the outer
    request's scheme and host, which items' bind references and next links are judged against."""
    tenant.counters.batches += 1
    requests, error = _parse(raw, rid, crid)
    if error is not None:
        return error
    key = _content_key(requests)
    shuffle_seed = tenant.faults.shuffle_seed(key)
    fault = tenant.faults.decide(key, "batch")
    if fault is not None:
        tenant.counters.fault(fault)
        if fault == "503":
            return BatchResult(tenant.unavailable("/$batch", rid, crid))
        if fault == "504":
            return BatchResult(gateway_timeout(rid, crid))
        if fault == "reset":
            return BatchResult(Outcome(0, action=RESET))
    committed_before = _commits(tenant)
    ambiguous_before = tenant.counters.ambiguous_commits
    responses: list[dict[str, Any]] = []
    statuses: list[int] = []
    for item in requests:
        path = _item_path(item["url"]) or "/"
        item_headers = item.get("headers")
        item_crid = (item_headers.get("client-request-id") if isinstance(item_headers, dict) else None) or crid
        item_rid = new_guid()
        outcome = tenant.evaluate(
            item["method"].upper(), path, item.get("body"), app, item_rid, str(item_crid), in_batch=True,
            query=_item_query(item["url"]), origin=origin,
        )
        body = outcome.body.decode(errors="replace") if isinstance(outcome.body, bytes) else outcome.body
        headers = {"Content-Type": "application/json", "request-id": item_rid, "client-request-id": str(item_crid)}
        headers.update(outcome.headers)
        responses.append({"id": item["id"], "status": outcome.status, "headers": headers, "body": body})
        statuses.append(outcome.status)
    random.Random(shuffle_seed).shuffle(responses)
    if fault in ("ambiguous-504", "ambiguous-reset"):
        # every commit of this batch is now unconfirmed; items already answered 504 were counted once
        committed = _commits(tenant) - committed_before
        already = tenant.counters.ambiguous_commits - ambiguous_before
        tenant.counters.ambiguous_commits += committed - already
        if fault == "ambiguous-504":
            return BatchResult(gateway_timeout(rid, crid))
        return BatchResult(Outcome(0, action=RESET))
    delay = tenant.faults.latency_for(key) if fault == "latency" else 0.0
    return BatchResult(Outcome(200, {"responses": responses}, delay=delay), statuses)
