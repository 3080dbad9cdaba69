""" "Test a package": ask a channel's deciders about any package, stored in PSM or not.

The admin page and the API share the checks of the question here; the answer comes from
`sync.policy.test_package` (the decider each mirror of the channel uses)."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from channels_app.models import Channel
from policies_app.ecosystems import ECOSYSTEMS
from policies_app.models import validate_platforms

from .sync import policy as sync_policy

MAX_NAME = 255  # as Package.name
MAX_PLATFORM = 64


def question_problems(channel: Channel, *, name: str, version: str, platform: str) -> dict:
    """What is wrong with asking `channel` about this package, by field (empty: nothing)."""
    problems = {}
    if not name:
        problems["name"] = "Give the package name, e.g. numpy."
    elif len(name) > MAX_NAME:
        problems["name"] = f"At most {MAX_NAME} characters."
    if len(version) > MAX_NAME:
        problems["version"] = f"At most {MAX_NAME} characters."
    if platform:
        ecosystem = ECOSYSTEMS.get(channel.kind)
        unsupported = ecosystem.unsupported_rules.get("platforms") if ecosystem else None
        if unsupported:
            problems["platform"] = (
                f"Not for {ecosystem.label} channels ({unsupported}); leave it empty."
            )
        elif len(platform) > MAX_PLATFORM:
            problems["platform"] = f"At most {MAX_PLATFORM} characters."
        else:
            try:
                validate_platforms([platform])
            except ValidationError as exc:
                problems["platform"] = " ".join(exc.messages)
    return problems


def package_test(channel: Channel, *, name: str, version: str = "", platform: str = "") -> dict:
    """What the channel's deciders say of the package (see `sync.policy.test_package`)."""
    return sync_policy.test_package(channel=channel, name=name, version=version, platform=platform)
