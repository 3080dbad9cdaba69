"""Announcements to the operator's webhook (`PSM_WEBHOOK_URL`): one JSON POST per event.

The body is `{"event": ..., "at": ..., **payload}`, serialised once when the event happens, so
the signature (`X-PSM-Signature: sha256=<HMAC-SHA256 of the body>` with `PSM_WEBHOOK_SECRET`,
as GitHub signs its webhooks) covers exactly the bytes sent on every attempt. A POST that fails
to connect or is not answered 2xx is retried `PSM_WEBHOOK_RETRIES` times, waiting twice as long
each time. The URL is the operator's own, so it does not pass the upstream allowlist, but it
may hold credentials: it is only ever logged redacted.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import orjson
import requests
from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .http.client import USER_AGENT
from .redaction import redact, scrub

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-PSM-Signature"
TIMEOUT = 10  # seconds to connect, and again to read the answer
BACKOFF = 10  # seconds before the first retry; doubled for each later one
BACKOFF_MAX = 1800  # below the Redis broker's visibility timeout (1 h), or it sends it twice


class WebhookError(Exception):
    """The webhook could not be reached or did not accept the event."""


def announce(event: str, payload: dict[str, Any]) -> None:
    """Queue a POST of the event to PSM_WEBHOOK_URL once the current transaction commits;
    nothing when no URL is set."""
    if not settings.PSM_WEBHOOK_URL:
        return
    document = {"event": event, "at": timezone.now(), **payload}
    body = orjson.dumps(document, default=str).decode()
    transaction.on_commit(lambda: post_webhook.delay(event=event, body=body))


def signature(body: bytes, secret: str) -> str:
    """The value of the signature header: `sha256=` and the HMAC-SHA256 of the body in hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_post(body: bytes) -> None:
    """POST the body to PSM_WEBHOOK_URL once; raise WebhookError unless it is answered 2xx."""
    url = settings.PSM_WEBHOOK_URL
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if settings.PSM_WEBHOOK_SECRET:
        headers[SIGNATURE_HEADER] = signature(body, settings.PSM_WEBHOOK_SECRET)
    try:
        # No redirects: a receiver that moved is a configuration to fix, not to follow blindly.
        response = requests.post(
            url, data=body, headers=headers, timeout=TIMEOUT, allow_redirects=False
        )
    except requests.RequestException as exc:
        # requests quotes the URL in its messages: never with its credentials.
        raise WebhookError(scrub(f"{exc.__class__.__name__}: {exc}", url)) from None
    with response:
        if not 200 <= response.status_code < 300:
            raise WebhookError(f"answered {response.status_code} {response.reason or ''}".strip())


def backoff(retries: int) -> int:
    """Seconds to wait before retry number `retries` + 1."""
    return min(BACKOFF_MAX, BACKOFF * 2**retries)


@shared_task(bind=True, name="psm.post_webhook", max_retries=None)
def post_webhook(self, *, event: str, body: str) -> bool:
    """POST an announced event, retried with exponential backoff (see the module); True once
    delivered, False when given up or when no URL is set (any more)."""
    url = settings.PSM_WEBHOOK_URL
    if not url:
        return False
    attempt = self.request.retries + 1
    try:
        webhook_post(body.encode())
    except WebhookError as exc:
        if self.request.retries >= settings.PSM_WEBHOOK_RETRIES:
            logger.error(
                "webhook %s: %s not delivered after %d attempts: %s",
                redact(url),
                event,
                attempt,
                exc,
            )
            return False
        wait = backoff(self.request.retries)
        logger.warning(
            "webhook %s: %s, attempt %d: %s; trying again in %d s",
            redact(url),
            event,
            attempt,
            exc,
            wait,
        )
        raise self.retry(countdown=wait) from None
    logger.info("webhook %s: %s delivered (attempt %d)", redact(url), event, attempt)
    return True
