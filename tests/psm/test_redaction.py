"""Redaction: secrets in URLs and text shown as ***, restored on edit, kept out of every log."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from psm.redaction import (
    RedactingFilter,
    is_masked,
    redact,
    redact_handlers,
    refers_to_secret,
    restore_secrets,
    scrub,
    scrub_data,
)

TOKEN = "psm_" + "Abc-_123" * 5 + "xyz"  # the shape psm.tokens issues (43 characters)
SOURCE = "https://alice:s3cret@repo.example:8443/repo/t/abc123token/org/main?token=q1w2e3#frag"


# --- redact ---------------------------------------------------------------------------------


def test_redact_hides_every_secret_of_a_url_and_keeps_the_rest_readable():
    assert redact(SOURCE) == "https://***@repo.example:8443/repo/t/***/org/main?token=***#***"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://conda.anaconda.org/conda-forge", "https://conda.anaconda.org/conda-forge"),
        ("https://TOKEN123456@psm.example/api/repo/x/", "https://***@psm.example/api/repo/x/"),
        ("https://h.example/t/tok", "https://h.example/t/***"),
        ("https://h.example/a?flag&k=v", "https://h.example/a?***&k=***"),
        ("http://[::1]:8080/t/tok/x", "http://[::1]:8080/t/***/x"),
    ],
)
def test_redact(url, shown):
    assert redact(url) == shown


def test_redact_never_raises_on_an_unparsable_url():
    assert redact("http://[::1/t/tok/x") == "http://[::1/t/***/x"


# --- scrub ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        (f"Not Found: /api/repo/t/{TOKEN}/chan/x", "Not Found: /api/repo/t/***/chan/x"),
        (f"Authorization: Token {TOKEN}", "Authorization: Token psm_***"),
        ("hint psm_Abcd of the token", "hint psm_Abcd of the token"),
        ("GET https://u:pw@h.example/x failed", "GET https://***@h.example/x failed"),
        ("Max retries exceeded with url: /x?token=abc (Caused", "url: /x?token=*** (Caused"),
        ("Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln", "Authorization: Bearer ***"),
        ("Bearer authentication never checks it", "Bearer authentication never checks it"),
        ("What? It failed. Is the host right?no", "What? It failed. Is the host right?no"),
        ('"GET /api/x/?channel=main&token=abc HTTP/1.1"', '?channel=main&token=*** HTTP/1.1"'),
        ("/f?X-Amz-Signature=abc&X-Amz-Date=1", "/f?X-Amz-Signature=***&X-Amz-Date=1"),
        ("see http://h.example/x?a=1&b=2.", "see http://h.example/x?a=***&b=***"),
    ],
)
def test_scrub_hides_secrets_wherever_a_text_quotes_them(text, clean):
    assert scrub(text).endswith(clean)


def test_scrub_with_the_url_hides_its_secrets_quoted_alone():
    text = "connect failed for alice:s3cret (token abc123token, q=token=q1w2e3)"
    clean = scrub(text, SOURCE)
    for secret in ("s3cret", "abc123token", "q1w2e3"):
        assert secret not in clean


def test_scrub_does_not_hide_a_short_secret_everywhere_but_hides_it_in_urls():
    url = "https://u:ab@h.example/x"
    assert scrub("tabs and labs; see https://u:ab@h.example/x", url) == (
        "tabs and labs; see https://***@h.example/x"
    )


def test_scrub_is_idempotent():
    once = scrub(f"{SOURCE} /api/repo/t/{TOKEN}/c", SOURCE)
    assert scrub(once, SOURCE) == once


def test_scrub_data_cleans_nested_strings():
    data = {"url": SOURCE, "list": [f"/t/{TOKEN}/x", 3, None], "nested": {"k": "plain"}}
    assert scrub_data(data) == {
        "url": redact(SOURCE),
        "list": ["/t/***/x", 3, None],
        "nested": {"k": "plain"},
    }


def test_lookups_on_fields_holding_secrets_are_recognised():
    assert refers_to_secret("source_url__startswith")
    assert refers_to_secret("mirror__source_url")
    assert refers_to_secret("upstream_url__contains")
    assert not refers_to_secret("name__icontains")


# --- restore_secrets: write-only -------------------------------------------------------------


def test_the_redacted_url_restores_the_stored_one():
    assert is_masked(redact(SOURCE))
    assert restore_secrets(redact(SOURCE), SOURCE) == SOURCE


def test_an_edit_on_the_same_origin_keeps_the_secrets_where_they_were():
    edited = "https://***@repo.example:8443/repo/t/***/org/other?token=***&extra=1"
    assert restore_secrets(edited, SOURCE) == (
        "https://alice:s3cret@repo.example:8443/repo/t/abc123token/org/other?token=q1w2e3&extra=1"
    )


def test_a_url_without_placeholders_is_new_and_written_as_given():
    new = "https://repo.example:8443/repo/t/n3w-token/org/main"
    assert not is_masked(new)
    assert restore_secrets(new, SOURCE) == new


def test_alice_password_placeholder_keeps_alices_password_only():
    assert restore_secrets("https://alice:***@repo.example:8443/x", SOURCE) == (
        "https://alice:s3cret@repo.example:8443/x"
    )
    with pytest.raises(ValueError, match="enter the token again"):
        restore_secrets("https://bob:***@repo.example:8443/x", SOURCE)


@pytest.mark.parametrize(
    "submitted",
    [
        "https://***@evil.example/repo/t/***/org/main",  # another host
        "http://***@repo.example:8443/repo/t/***/org/main",  # another scheme
        "https://***@repo.example:9443/repo/t/***/org/main",  # another port
        "https://repo.example:8443/repo/t/***/t/***/x",  # more tokens than stored
        "https://repo.example:8443/repo/x?other=***",  # no such stored value
    ],
)
def test_a_placeholder_never_carries_a_secret_elsewhere(submitted):
    with pytest.raises(ValueError, match="enter the token again"):
        restore_secrets(submitted, SOURCE)


def test_a_placeholder_without_a_stored_url_is_refused():
    with pytest.raises(ValueError, match="enter the token again"):
        restore_secrets("https://h.example/t/***/x", "")


# --- logging --------------------------------------------------------------------------------


def _record(msg, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("t", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_filter_scrubs_the_message_and_its_arguments():
    record = _record("mirror %s: %s", 3, f"{SOURCE} failed")
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"mirror 3: {redact(SOURCE)} failed"


def test_filter_leaves_clean_records_as_they_were():
    record = _record("mirror %s: %d packages", "forge", 3)
    RedactingFilter().filter(record)
    assert (record.msg, record.args) == ("mirror %s: %d packages", ("forge", 3))


def test_filter_scrubs_the_traceback():
    try:
        raise RuntimeError(f"boom {SOURCE}")
    except RuntimeError:
        record = _record("crashed", exc_info=sys.exc_info())
    RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "crashed" in text and "RuntimeError: boom https://***@repo.example" in text
    assert "abc123token" not in text and "s3cret" not in text


def test_filter_survives_a_broken_format():
    record = _record("%d of %s", f"/t/{TOKEN}/x")
    RedactingFilter().filter(record)
    assert TOKEN not in f"{record.msg} {record.args}"


def _is_ours(handler: logging.Handler) -> bool:
    return not type(handler).__module__.startswith("_pytest")


def test_every_configured_log_handler_redacts():
    """settings.LOGGING puts the filter on every handler, Django's own included."""
    loggers = [logging.getLogger(), logging.getLogger("django"), logging.getLogger("django.server")]
    loggers += [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    handlers = {h for logger in loggers for h in logger.handlers if _is_ours(h)}
    handlers = {h for h in handlers if not isinstance(h, logging.NullHandler)}
    assert handlers  # the console and runserver's request lines
    for handler in handlers:
        assert any(isinstance(f, RedactingFilter) for f in handler.filters), handler


def test_django_request_lines_are_scrubbed_by_the_configured_handler():
    handler = logging.getLogger("django.server").handlers[0]
    stream = io.StringIO()
    old = handler.setStream(stream)
    try:
        logging.getLogger("django.server").info(
            '"%s" %s %s', f"GET /api/repo/t/{TOKEN}/chan/x HTTP/1.1", "404", "9"
        )
    finally:
        handler.setStream(old)
    assert "GET /api/repo/t/***/chan/x" in stream.getvalue()
    assert TOKEN not in stream.getvalue()


def test_redact_handlers_adds_the_filter_once():
    logger = logging.getLogger("psm.tests.redact_handlers")
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    try:
        redact_handlers(logger)
        redact_handlers(logger)
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)


def test_celery_worker_logging_redacts():
    """The worker replaces the root handlers (worker_hijack_root_logger): psm/celery.py puts
    the filter on its handlers too, for the root and the task loggers."""
    script = (
        "import logging, django; django.setup()\n"
        "from psm.celery import app\n"
        "app.log.setup(loglevel='INFO')\n"
        f"logging.getLogger('mirrors_app.sync').warning('fetch %s failed', {SOURCE!r})\n"
        f"logging.getLogger('celery.task').warning('task saw %s', '/api/repo/t/{TOKEN}/c')\n"
        "try:\n"
        f"    raise RuntimeError({SOURCE!r})\n"
        "except RuntimeError:\n"
        "    logging.getLogger('celery.app.trace').exception('task failed')\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "psm.settings"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "fetch https://***@repo.example:8443/repo/t/***/org/main" in output
    assert "task saw /api/repo/t/***/c" in output and "RuntimeError: https://***@" in output
    for secret in ("s3cret", "abc123token", "q1w2e3", TOKEN):
        assert secret not in output


@pytest.mark.django_db
def test_audit_events_record_no_secret():
    from psm.audit import audit_record
    from psm.models import AuditEvent

    audit_record(actor=None, action="test", url=SOURCE, nested={"path": f"/api/repo/t/{TOKEN}/x"})
    details = AuditEvent.objects.get().details
    assert details == {"url": redact(SOURCE), "nested": {"path": "/api/repo/t/***/x"}}


@pytest.mark.parametrize(
    "hostile",
    ["x" * 200_000, "http://" * 30_000, "&token" * 30_000, "a://" * 50_000, "http://a?" * 20_000],
)
def test_scrub_stays_linear_on_hostile_lines(hostile):
    """Every log line goes through scrub, request paths of anyone included: a pattern that
    backtracks over the whole line from each position would let one request hold a worker
    for minutes (this input took over a minute when it did)."""
    assert scrub(hostile + " https://u:pw@h/t/abc/x?token=1").endswith(
        " https://***@h/t/***/x?token=***"
    )
