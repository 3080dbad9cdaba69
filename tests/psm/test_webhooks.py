"""The operator's webhook: events POSTed as JSON, signed, retried with backoff, only when a URL
is set, and never logged with the URL's credentials."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import logging

import pytest
from django.core.exceptions import ImproperlyConfigured

from psm import webhooks
from tests.fixtures.celery_worker import Worker, worker_env
from tests.fixtures.webhook import WebhookReceiver


@pytest.fixture
def hook(tmp_path, settings):
    """A receiver on loopback that PSM_WEBHOOK_URL points at (no secret)."""
    with WebhookReceiver(tmp_path) as receiver:
        settings.PSM_WEBHOOK_URL = receiver.url + "/hooks/psm"
        settings.PSM_WEBHOOK_SECRET = ""
        yield receiver


def post(body: str, event: str = "policy.enforced"):
    """Run the task in this process, its retries at once (no backoff waits)."""
    return webhooks.post_webhook.apply(kwargs={"event": event, "body": body}).get()


def verify(body: bytes, secret: str, header: str) -> bool:
    """What a receiver does: compare the header with its own HMAC of the body."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def test_the_event_is_posted_as_json(hook):
    assert post('{"event": "policy.enforced", "n": 1}') is True

    ((headers, body),) = hook.received
    assert json.loads(body) == {"event": "policy.enforced", "n": 1}
    assert headers["content-type"] == "application/json"
    assert "x-psm-signature" not in headers  # no secret set
    assert hook.requests == [("POST", "/hooks/psm")]


def test_the_signature_verifies_with_the_secret(hook, settings):
    settings.PSM_WEBHOOK_SECRET = "it is a secret"
    assert post('{"event": "x"}') is True
    ((headers, body),) = hook.received
    assert verify(body, "it is a secret", headers["x-psm-signature"])
    assert not verify(body, "another secret", headers["x-psm-signature"])


def test_a_failed_post_is_retried_until_it_is_accepted(hook, settings):
    settings.PSM_WEBHOOK_SECRET = "k"
    hook.statuses = [500, 503]
    assert post('{"event": "x"}') is True
    assert [status for _, _, status, _ in hook.answers] == [500, 503, 200]
    bodies = {body for _, body in hook.received}
    assert bodies == {b'{"event": "x"}'}  # the same bytes, the same signature, every time


def test_it_gives_up_after_the_configured_retries(hook, settings, caplog):
    settings.PSM_WEBHOOK_RETRIES = 2
    hook.statuses = [500] * 10
    with caplog.at_level(logging.WARNING, logger="psm.webhooks"):
        assert post('{"event": "x"}') is False
    assert len(hook.received) == 3  # the first attempt and two retries
    assert "not delivered after 3 attempts" in caplog.text


def test_connection_errors_are_retried_and_logged_without_credentials(
    refused_url, settings, caplog
):
    settings.PSM_WEBHOOK_URL = refused_url.replace("http://", "http://user:pa55word@") + (
        "/hook?token=t0psecret"
    )
    settings.PSM_WEBHOOK_RETRIES = 1
    with caplog.at_level(logging.INFO, logger="psm.webhooks"):
        assert post('{"event": "x"}') is False
    assert caplog.text.count("attempt") >= 2
    assert "pa55word" not in caplog.text and "t0psecret" not in caplog.text


def test_backoff_doubles_up_to_a_limit():
    assert [webhooks.backoff(n) for n in range(4)] == [10, 20, 40, 80]
    assert webhooks.backoff(30) == webhooks.BACKOFF_MAX


@pytest.mark.django_db
def test_without_a_url_nothing_is_queued_or_sent(
    hook, settings, django_capture_on_commit_callbacks
):
    settings.PSM_WEBHOOK_URL = ""
    with django_capture_on_commit_callbacks() as callbacks:
        webhooks.announce("policy.enforced", {"n": 1})
    assert callbacks == []
    assert post('{"event": "x"}') is False  # a task queued before the URL was removed
    assert hook.requests == []


@pytest.mark.django_db
def test_an_announcement_waits_for_the_commit(hook, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        webhooks.announce("policy.enforced", {"n": 1})
        assert hook.requests == []
    assert len(callbacks) == 1


@pytest.mark.parametrize("value", ["ftp://example.org/hook", "not a url", "http://"])
def test_a_webhook_url_that_is_not_http_stops_start_up(monkeypatch, value):
    env = importlib.import_module("psm.settings")  # its helpers read os.environ when called
    monkeypatch.setenv("PSM_WEBHOOK_URL", value)
    with pytest.raises(ImproperlyConfigured, match="PSM_WEBHOOK_URL must be an http"):
        env._webhook_url()


def test_the_webhook_url_may_come_from_a_file(monkeypatch, tmp_path):
    env = importlib.import_module("psm.settings")
    (tmp_path / "url").write_text("https://hooks.example.org/psm?token=x\n")
    monkeypatch.setenv("PSM_WEBHOOK_URL_FILE", str(tmp_path / "url"))
    assert env._webhook_url() == "https://hooks.example.org/psm?token=x"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_delivers_the_announcement_after_a_failure(broker, hook, settings):
    """Through the broker: the first POST is answered 500, the worker tries again later and
    the receiver gets the same signed JSON."""
    settings.PSM_WEBHOOK_SECRET = "s3cret"
    hook.statuses = [500]
    worker = Worker(
        worker_env(broker, PSM_WEBHOOK_URL=settings.PSM_WEBHOOK_URL, PSM_WEBHOOK_SECRET="s3cret")
    )
    try:
        worker.wait_ready()
        webhooks.announce("policy.enforced", {"mirror": {"id": 1, "name": "forge"}})
        received = hook.wait_for(2)
    finally:
        worker.stop()

    assert len(received) == 2, worker.output()
    assert [status for _, _, status, _ in hook.answers] == [500, 200]
    (first_headers, first), (headers, body) = received
    assert first == body and first_headers["x-psm-signature"] == headers["x-psm-signature"]
    assert verify(body, "s3cret", headers["x-psm-signature"])
    event = json.loads(body)
    assert event["event"] == "policy.enforced"
    assert event["mirror"] == {"id": 1, "name": "forge"}
    assert event["at"]
