"""Secrets in URLs and text: what is hidden (as `***`) before anything is logged, shown,
recorded as an error or written to the audit log.

A source URL may carry secrets in its user info (`user:password@`, pip's `<token>:x@`), in
`/t/<token>/` path segments (Anaconda, PSM) and in its query string (`?token=`). They are
write-only: `redact` shows a URL with them as `***`, `restore_secrets` takes them back from the
stored URL when an edited URL still says `***`, and `scrub` hides them, and PSM API tokens
(`psm_…`), in any text. `RedactingFilter` applies `scrub` to every log record a handler emits.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import SplitResult, unquote, urlsplit

MASK = "***"
# Secrets shorter than this are hidden where they appear in a URL, not wherever the same few
# characters appear in a text (a password "json" would turn every "repodata.json" into "***").
MIN_BARE = 4

# Every pattern here runs on every log line, hostile request paths included, so each must stay
# linear in the text: a scheme starts only where no scheme character precedes it, and a URL is
# found once, as a whole, then taken apart with string operations.
_SCHEME = r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://"
_STOP = r"\s\"'<>`"  # where a URL quoted in a text ends
_USERINFO = re.compile(rf"(?P<scheme>{_SCHEME})[^{_STOP}/\\?#@]+@")
_PATH_TOKEN = re.compile(rf"/t/[^{_STOP}/?#]+")
# A full URL (an upstream's): every query value and the fragment hidden.
_URL = re.compile(rf"{_SCHEME}[^{_STOP}]*")
# Elsewhere (request lines, paths): the values of parameters named like secrets, so the
# `?channel=main` of an access log stays readable. S3 presigned URLs: X-Amz-Signature, ….
_PARAM = re.compile(rf"(?P<name>[?&;][\w.\-]+)=[^{_STOP}&#;]+")
_SECRET_NAME = re.compile(r"token|key|secret|passw|pwd|auth|sig|credential|session", re.I)
# PSM API tokens (psm.tokens: "psm_" and 43 URL-safe characters); the 8-character hint
# shown in the admin ("psm_abcd") is not a secret.
_PSM_TOKEN = re.compile(r"psm_[A-Za-z0-9_\-]{20,}")
# Credentials after "Basic" or "Bearer": long and not a plain word ("Bearer authentication").
_AUTH_HEADER = re.compile(
    r"\b(?P<scheme>Basic|Bearer)\s+(?=[A-Za-z]*[0-9._~+/=\-])[A-Za-z0-9._~+/=\-]{16,}",
    re.IGNORECASE,
)


def _mask_query(query: str) -> str:
    """`a=1&b` as `a=***&***`: the names stay readable, the values are hidden."""
    return "&".join(
        f"{part.partition('=')[0]}={MASK}" if "=" in part else (MASK if part else part)
        for part in query.split("&")
    )


def _mask_url(url: str) -> str:
    """A URL found in a text with its query values and fragment as `***`."""
    head, hashed, fragment = url.partition("#")
    base, asked, query = head.partition("?")
    if asked and query:
        base = f"{base}?{_mask_query(query)}"
    elif asked:
        base += "?"
    if hashed:
        base += f"#{MASK}" if fragment else "#"
    return base


def _mask_param(match: re.Match) -> str:
    name = match["name"]
    return f"{name}={MASK}" if _SECRET_NAME.search(name) else match[0]


def _userinfo(parts: SplitResult) -> str:
    return parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""


def _path_tokens(path: str) -> list[str]:
    segments = path.split("/")
    return [segments[i + 1] for i, segment in enumerate(segments[:-1]) if segment == "t"]


def _secrets(url: str) -> list[str]:
    """The parts of `url` that `redact` hides, as they may be quoted elsewhere in a text:
    user info and password, `/t/<token>/` segments, the query and its `name=value` pairs,
    the fragment; longest first, so a longer secret is never left half hidden."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    userinfo = _userinfo(parts)
    found = [*_path_tokens(parts.path), userinfo, password or ""]
    if userinfo and password is None:
        found.append(parts.username or "")  # the user name is the secret (pip: `<token>@`)
    if parts.query:
        found += [parts.query, *parts.query.split("&")]
    found.append(parts.fragment)
    found += [unquote(secret) for secret in found]
    kept = {secret for secret in found if len(secret) >= MIN_BARE and secret != MASK}
    return sorted(kept, key=len, reverse=True)


def redact(url: str) -> str:
    """The URL with its secrets as `***`: user info, `/t/<token>/` segments, query values and
    fragment. Safe to log or show; `restore_secrets` reads it back."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    segments = parts.path.split("/")
    for i, segment in enumerate(segments[:-1]):
        if segment == "t":
            segments[i + 1] = MASK
    return parts._replace(
        netloc=netloc,
        path="/".join(segments),
        query=_mask_query(parts.query) if parts.query else "",
        fragment=MASK if parts.fragment else "",
    ).geturl()


def scrub(text: str, url: str = "") -> str:
    """Hide secrets wherever `text` quotes them: those of `url` (if given) anywhere; in every
    URL of the text its user info, `/t/<token>/` segments, query values and fragment; in
    paths, `/t/<token>/` and parameters named like secrets (`?token=`); PSM API tokens and
    Basic/Bearer credentials."""
    if not text:
        return text
    for secret in _secrets(url) if url else ():
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    text = _PATH_TOKEN.sub(f"/t/{MASK}", text)
    text = _URL.sub(lambda m: _mask_url(m[0]), text)
    text = _PARAM.sub(_mask_param, text)
    text = _PSM_TOKEN.sub(f"psm_{MASK}", text)
    return _AUTH_HEADER.sub(rf"\g<scheme> {MASK}", text)


def scrub_data(value):
    """`scrub` every string inside JSON-like data (dicts, lists), keys included."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_data(key): scrub_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_data(item) for item in value]
    return value


# Fields that hold URLs with their secrets (mirror sources, the package file URLs made from
# them): never offered to filters or searches, which would tell a secret a character at a time.
SECRET_FIELDS = frozenset({"source_url", "upstream_url"})


def refers_to_secret(lookup: str) -> bool:
    """Whether a query lookup (`mirror__source_url__startswith`) reads a field with secrets."""
    return any(part in SECRET_FIELDS for part in lookup.split("__"))


# --- Write-only secrets: an edited URL that still shows *** keeps the stored secrets --------


def _origin(parts: SplitResult) -> tuple[str, str]:
    return parts.scheme.lower(), parts.netloc.rpartition("@")[2].lower()


def is_masked(url: str) -> bool:
    """Whether `url` shows `***` where `redact` puts it (a secret to take from the stored URL)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (
        MASK in _userinfo(parts)
        or MASK in _path_tokens(parts.path)
        or any(part.partition("=")[2] == MASK or part == MASK for part in parts.query.split("&"))
        or parts.fragment == MASK
    )


def restore_secrets(submitted: str, stored: str) -> str:
    """`submitted` with each `***` that `redact` put in a secret's place replaced by that secret
    of `stored`. A URL without `***` is a new URL and is returned as it is.

    Secrets only go back to the origin (scheme, host and port) they were given for: a `***`
    sent with another origin, or where the stored URL has no secret, raises ValueError.
    """
    if not is_masked(submitted):
        return submitted
    again = "Secrets in the source URL are shown as ***; enter the token again"
    try:
        new, old = urlsplit(submitted), urlsplit(stored or "")
    except ValueError:
        raise ValueError(f"{again}.") from None
    if not stored or _origin(new) != _origin(old):
        scheme, host = _origin(old)
        raise ValueError(
            f"{again}: a *** is only kept for the address it was entered for"
            + (f" ({scheme}://{host})." if stored else ".")
        )
    netloc = new.netloc
    userinfo = _userinfo(new)
    if MASK in userinfo:
        kept, user = _userinfo(old), userinfo.partition(":")[0]
        if userinfo != MASK and (userinfo != f"{user}:{MASK}" or not kept.startswith(f"{user}:")):
            kept = ""  # only `***` (all of it) or `alice:***` (alice's stored password)
        if not kept:
            raise ValueError(f"{again}: the stored URL has no user name or password.")
        netloc = f"{kept}@{netloc.rpartition('@')[2]}"
    tokens = _path_tokens(old.path)
    segments = new.path.split("/")
    positions = [i + 1 for i, segment in enumerate(segments[:-1]) if segment == "t"]
    for nth, i in enumerate(positions):  # the nth `/t/***/` keeps the stored nth token
        if segments[i] == MASK:
            if nth >= len(tokens) or not tokens[nth]:
                raise ValueError(f"{again}: the stored URL has no token for this /t/***/.")
            segments[i] = tokens[nth]
    stored_pairs = [part for part in old.query.split("&") if part]
    query = []
    for part in new.query.split("&") if new.query else []:
        name, equals, value = part.partition("=")
        if equals and value == MASK:
            match = next((p for p in stored_pairs if "=" in p and p.split("=")[0] == name), None)
        elif part == MASK:
            match = next((p for p in stored_pairs if "=" not in p), None)
        else:
            query.append(part)
            continue
        if match is None:
            raise ValueError(f"{again}: the stored URL has no value for {name!r}.")
        stored_pairs.remove(match)
        query.append(match)
    fragment = new.fragment
    if fragment == MASK:
        if not old.fragment:
            raise ValueError(f"{again}: the stored URL has no fragment.")
        fragment = old.fragment
    return new._replace(
        netloc=netloc, path="/".join(segments), query="&".join(query), fragment=fragment
    ).geturl()


# --- Logging -------------------------------------------------------------------------------

_TRACEBACKS = logging.Formatter()


class RedactingFilter(logging.Filter):
    """A handler filter hiding secrets in every record: the message with its arguments, the
    traceback and the stack. A record with nothing to hide is left exactly as it was."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: the handler reports msg and args as they are
            message = f"{record.msg} {record.args}"
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
            if hasattr(record, "message"):
                record.message = clean
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or _TRACEBACKS.formatException(record.exc_info)
            if scrub(text) != text:
                # The exception itself goes too: handlers that render it (mail, Sentry) would
                # show the secret; formatters print exc_text in its place.
                record.exc_text, record.exc_info = scrub(text), None
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def redact_handlers(logger: logging.Logger) -> None:
    """Put a RedactingFilter on each of the logger's handlers (those set up outside
    settings.LOGGING, e.g. by Celery)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
