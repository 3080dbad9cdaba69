"""Copy-paste install lines for a package, per package type, with the channel's real URL.

The URLs are those the repository serves (`psm/urls.py` `repo-file` and `repo-token`), made
absolute from the request. For a channel that is not public they carry a token placeholder in
the form each client sends credentials as (README, "Channel privacy and package clients"): in
the path for conda, pixi and R; HTTP Basic (`<TOKEN>:x-auth-token`) for pip and uv.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from django.http import HttpRequest
from django.urls import reverse

from channels_app.access import BASIC_PASSWORD
from channels_app.models import Channel

TOKEN = "<TOKEN>"
#: Stands for the token while the URL is reversed (reverse() would escape `<` and `>`).
_SLOT = "psm-token-placeholder"


@dataclass(frozen=True)
class InstallLine:
    client: str
    command: str


@dataclass(frozen=True)
class ChannelUrls:
    """Where clients reach a channel (no trailing slash): `root` itself; for a channel that
    needs a token, `path_root` with the token in the path and `basic_root` with it as HTTP
    Basic credentials (both are `root` for a public channel)."""

    root: str
    path_root: str  # with the token in the path, where the channel needs one
    basic_root: str  # with the token as HTTP Basic credentials, where it needs one
    needs_token: bool


def channel_urls(request: HttpRequest, channel: Channel) -> ChannelUrls:
    """The channel's URLs as this request reached PSM (scheme, host and port)."""
    root = request.build_absolute_uri(reverse("repo-file", kwargs={"path": channel.path}))
    if channel.visibility == Channel.Visibility.PUBLIC:
        return ChannelUrls(root, root, root, needs_token=False)
    tokened = reverse("repo-token", kwargs={"token": _SLOT, "path": channel.path})
    path_root = request.build_absolute_uri(tokened).replace(_SLOT, TOKEN)
    scheme, netloc, path, query, fragment = urlsplit(root)
    basic_root = urlunsplit((scheme, f"{TOKEN}:{BASIC_PASSWORD}@{netloc}", path, query, fragment))
    return ChannelUrls(root, path_root, basic_root, needs_token=True)


def _conda(urls: ChannelUrls, name: str) -> list[InstallLine]:
    url = urls.path_root
    return [
        InstallLine("conda", f"conda install -c {url} --override-channels {name}"),
        InstallLine("mamba", f"mamba install -c {url} --override-channels {name}"),
        InstallLine("pixi", f"pixi workspace channel add {url}"),
        InstallLine("pixi", f"pixi add {name}"),
    ]


def _python(urls: ChannelUrls, name: str) -> list[InstallLine]:
    index = f"{urls.basic_root}/simple/"  # the channel's simple repository (formats/pypi.py)
    return [
        InstallLine("pip", f"pip install --index-url {index} {name}"),
        InstallLine("uv", f"uv pip install --index-url {index} {name}"),
        InstallLine("uv (project)", f"uv add --default-index {index} {name}"),
    ]


def _r(urls: ChannelUrls, name: str) -> list[InstallLine]:
    return [InstallLine("R", f'install.packages("{name}", repos = "{urls.path_root}")')]


#: Package type -> its clients' lines: a new type adds its clients here.
INSTALLERS: dict[str, Callable[[ChannelUrls, str], list[InstallLine]]] = {
    "conda": _conda,
    "pypi": _python,
    "cran": _r,
}


def install_lines(urls: ChannelUrls, kind: str, name: str) -> list[InstallLine]:
    """How each client of the package type installs `name` from the channel (none for a
    type without clients listed here)."""
    installer = INSTALLERS.get(kind)
    return installer(urls, name) if installer else []
