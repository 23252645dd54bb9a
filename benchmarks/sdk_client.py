"""Microsoft's ``msgraph-beta-sdk`` used the way its docs suggest, pointed at the emulator.

- Client: ``GraphServiceClient`` on a ``GraphRequestAdapter`` with kiota's ``AzureIdentityAuthenticationProvider``
  and a static credential (an object whose ``get_token`` returns an ``azure.core.credentials.AccessToken``).
  kiota refuses plain ``http://`` except on localhost/127.0.0.1 (``LOCALHOST_STRINGS``), so the emulator's
  ``http://127.0.0.1`` root is accepted as is; ``allowed_hosts=["127.0.0.1"]`` is the documented way to say which
  hosts receive the token (an empty list would send it anywhere). The root is set with the documented
  ``request_adapter.base_url``. Everything else is the SDK's default middleware (RetryHandler: 429/503/504,
  3 retries; redirect, telemetry, ...), over its default ``httpx.AsyncClient``.
- Request: the docs' navigation
  ``device_management.windows_autopilot_device_identities.by_windows_autopilot_device_identity_id(id)
  .deployment_profile.assignments.post(body)`` does not exist in msgraph-beta-sdk: the device's
  ``deployment_profile`` builder only has ``get`` (see ``navigation()``). The closest builder that produces the
  same POST is the profile's ``assignments`` builder (same body model, ``WindowsAutopilotDeploymentProfileAssignment``)
  re-pointed with the SDK's documented ``with_url(raw_url)`` at
  ``{root}/deviceManagement/windowsAutopilotDeviceIdentities/{id}/deploymentProfile/assignments``: the same
  method, URL and JSON as the engine sends, through the same middleware pipeline.
- Concurrency: ``asyncio.gather`` over all devices with an ``asyncio.Semaphore`` of the engine's concurrency.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from benchmarks.common import GROUP, TOKEN, assignment_url

SCOPES = ["https://graph.microsoft.com/.default"]
PROFILE_ID = "00000000-0000-0000-0000-000000000001"  # only a path parameter of the builder we re-point


class StaticCredential:
    """A ``TokenCredential`` that always returns the same token (azure.core's protocol: ``get_token``)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)


def make_client(base_url: str) -> Any:
    from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
    from msgraph_beta import GraphRequestAdapter, GraphServiceClient

    auth = AzureIdentityAuthenticationProvider(StaticCredential(TOKEN), scopes=SCOPES, allowed_hosts=["127.0.0.1"])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = base_url
    return GraphServiceClient(request_adapter=adapter)


def navigation() -> str:
    """Which request builder the benchmark uses (the documented one when a future SDK grows it)."""
    from msgraph_beta.generated.device_management.windows_autopilot_device_identities.item.deployment_profile.deployment_profile_request_builder import (  # noqa: E501
        DeploymentProfileRequestBuilder,
    )

    if hasattr(DeploymentProfileRequestBuilder, "assignments"):
        return "device.deployment_profile.assignments.post"
    return "profile.assignments.with_url(device assignments URL).post"


def make_body() -> Any:
    from msgraph_beta.generated.models.group_assignment_target import GroupAssignmentTarget
    from msgraph_beta.generated.models.windows_autopilot_deployment_profile_assignment import (
        WindowsAutopilotDeploymentProfileAssignment,
    )

    return WindowsAutopilotDeploymentProfileAssignment(
        odata_type="#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
        target=GroupAssignmentTarget(group_id=GROUP),
    )


async def run_sdk(base_url: str, ids: list[str], concurrency: int) -> dict[str, Any]:
    """Assign every device with the SDK; the result lists the devices whose call raised."""
    client = make_client(base_url)
    body = make_body()
    how = navigation()
    # Warm-up outside the clock, as a long job would amortise it: the first response imports ~2,900 model
    # modules (Entity's deserializer table names every derived type of the beta schema), ~10 s here.
    warm = time.perf_counter()
    type(body)().get_field_deserializers()
    warmup = time.perf_counter() - warm
    semaphore = asyncio.Semaphore(concurrency)

    def request(device: str) -> Any:
        if how.startswith("device."):
            return (client.device_management.windows_autopilot_device_identities
                    .by_windows_autopilot_device_identity_id(device).deployment_profile.assignments)
        return (client.device_management.windows_autopilot_deployment_profiles
                .by_windows_autopilot_deployment_profile_id(PROFILE_ID).assignments
                .with_url(assignment_url(base_url, device)))

    async def one(device: str) -> str | None:
        async with semaphore:
            try:
                await request(device).post(body)
            except Exception as exc:  # the SDK raises APIError/ODataError or httpx errors; a device lost
                status = getattr(exc, "response_status_code", None)
                return f"{type(exc).__name__}{f' {status}' if status else ''}"
            return None

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one(d) for d in ids))
    elapsed = time.perf_counter() - started
    failed = [d for d, err in zip(ids, outcomes, strict=True) if err is not None]
    errors = Counter(err for err in outcomes if err is not None)
    return {"devices": len(ids), "succeeded": len(ids) - len(failed), "elapsed": elapsed, "failed_ids": failed,
            "errors": dict(errors), "navigation": how, "warmup": warmup}
