""" "Why is X not here?" on a channel's page, for those who may see its mirrors' details.

The answer is the mirrors' own explanation (`mirrors_app.reports.explain`, the details page's
"Why is a package missing?") for each mirror of the channel the user may view, and, when no
mirror lists the name, what the channel's deciders would say of it (`package_test`, the
admin's "Test a package").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from channels_app.models import Channel
from mirrors_app import reports
from mirrors_app.models import Mirror
from mirrors_app.package_test import package_test, question_problems
from mirrors_app.permissions import filter_allowed

MAX_QUERY = 255


def explaining_mirrors(user, channel: Channel) -> list[Mirror]:
    """The channel's mirrors whose details `user` may see (empty: no "why" for them)."""
    mirrors = Mirror.objects.filter(channel=channel).select_related("channel__parent")
    return list(filter_allowed(user, "view", mirrors).order_by("name"))


@dataclass
class Answer:
    query: str
    problem: str = ""
    #: (mirror, its explanation rows) for each mirror the user may see.
    mirrors: list[tuple[Mirror, list[dict]]] = field(default_factory=list)
    #: What the channel's deciders say of the name, when no mirror lists it.
    test: dict | None = None

    @property
    def listed(self) -> bool:
        return any(rows for _, rows in self.mirrors)


def why_not_here(channel: Channel, mirrors: list[Mirror], query: str) -> Answer:
    """Explain `query` (a package or file name) in the channel through these mirrors."""
    query = query.strip()[:MAX_QUERY]
    problems = question_problems(channel, name=query, version="", platform="")
    if problems:
        return Answer(query, problem=" ".join(problems.values()))
    answer = Answer(query, mirrors=[(m, reports.explain(m, query)) for m in mirrors])
    if not answer.listed:
        answer.test = package_test(channel, name=query)
    return answer
