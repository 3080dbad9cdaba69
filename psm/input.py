"""Input no field can hold: NUL (PostgreSQL cannot store or compare text holding it) and lone
surrogates (no response can encode one back). Refused with a 400 or a form error before it
reaches a view, a query or an error message, so it is never a 500 wherever a view forgot."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import unquote_plus

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict

logger = logging.getLogger(__name__)

BAD_INPUT = "The request holds a NUL character.\n"
OUT_OF_RANGE = "A number in the request is out of range.\n"
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def unusable_text(data) -> str | None:
    """The first string (key or value, at any depth) holding a NUL or a lone surrogate."""
    if isinstance(data, str):
        if "\x00" in data or any("\ud800" <= c <= "\udfff" for c in data):
            return data
        return None
    if isinstance(data, QueryDict):
        data = dict(data.lists())
    if isinstance(data, dict):
        data = [*data.keys(), *data.values()]
    if isinstance(data, list | tuple):
        return next((found for item in data if (found := unusable_text(item)) is not None), None)
    return None


def _has_nul(request: HttpRequest) -> bool:
    if (
        "\x00" in request.path_info
        or "\x00" in unquote_plus(request.META.get("QUERY_STRING", ""))
        or any("\x00" in value for value in request.COOKIES.values())
    ):
        return True
    # Form bodies (admin forms, the browsable API): Django decodes them for POST only; the
    # API's own parsers check every other body (psm.api).
    content_type = request.META.get("CONTENT_TYPE", "")
    if request.method == "POST" and content_type.startswith(FORM_CONTENT_TYPES):
        return unusable_text(request.POST) is not None
    return False


class RejectNulMiddleware:
    """A 400 for a NUL (`%00`) in the path, the query string, a cookie or a form body, on
    every route: no name, id, search term or form field of PSM holds one, so the answer is the
    same for every route, whatever exists."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _has_nul(request):
            return HttpResponseBadRequest(BAD_INPUT, content_type="text/plain")
        return self.get_response(request)


class RejectOutOfRangeMiddleware:
    """A 400 for a number past what any column holds (64 bits), wherever a view let it through
    to a query: SQLite cannot even bind one (OverflowError), where PostgreSQL matches nothing.
    Nothing was written: the statement never ran."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OverflowError):
            return None
        logger.warning("%s %s: %s", request.method, request.path, exception)
        return HttpResponseBadRequest(OUT_OF_RANGE, content_type="text/plain")


class StorableJSONField(forms.JSONField):
    """A form's JSON field refusing text the database cannot store: a `\\u0000` escape decodes
    to a NUL that no middleware sees in the form body."""

    def to_python(self, value):
        value = super().to_python(value)
        if unusable_text(value) is not None:
            raise forms.ValidationError("Text with a NUL or an invalid character is not allowed.")
        return value

    def prepare_value(self, value):
        if unusable_text(value) is not None:  # shown again as escapes, which a page can encode
            return json.dumps(value, cls=self.encoder)
        return super().prepare_value(value)


def storable_text(text: str) -> str:
    """Text from a hostile source as it can be stored and shown: control characters (NUL
    among them) and lone surrogates escaped (`\\x00`), the rest unchanged."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() and not "\ud800" <= c <= "\udfff" else ascii(c)[1:-1] for c in text
    )
