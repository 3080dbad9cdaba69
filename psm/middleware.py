"""Refuse input no route can use before it reaches a view, the ORM or the database."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote_plus

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

BAD_INPUT = "The request's path, query or cookies hold a NUL character.\n"


def _has_nul(request: HttpRequest) -> bool:
    return (
        "\x00" in request.path_info
        or "\x00" in unquote_plus(request.META.get("QUERY_STRING", ""))
        or any("\x00" in value for value in request.COOKIES.values())
    )


class RejectNulMiddleware:
    """A 400 for a NUL (`%00`) in the path, the query string or a cookie, on every route.

    PostgreSQL cannot store or compare text holding NUL: such a value reaching a query is a
    500 wherever a view forgot to check. No name, id or search term of PSM holds one, so the
    answer is the same 400 for every route, whatever exists."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _has_nul(request):
            return HttpResponseBadRequest(BAD_INPUT, content_type="text/plain")
        return self.get_response(request)
