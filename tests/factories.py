from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from channels_app.models import Channel, ChannelGrant
from mirrors_app.models import Mirror, SyncRun
from policies_app.models import Policy


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw")
    is_staff = True


class PolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Policy

    name = factory.Sequence(lambda n: f"policy-{n}")
    description = "A test policy"


class ChannelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Channel

    name = factory.Sequence(lambda n: f"channel-{n}")
    kind = "conda"


class MirrorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Mirror

    channel = factory.SubFactory(ChannelFactory)
    name = factory.Sequence(lambda n: f"mirror-{n}")
    mode = Mirror.Mode.PASSIVE
    kind = factory.LazyAttribute(lambda m: m.channel.kind)
    source_url = "http://127.0.0.1:9/conda-forge"
    cron = "0 0 1 * *"


class SyncRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SyncRun

    mirror = factory.SubFactory(MirrorFactory)
    state = SyncRun.State.QUEUED


def grant(channel: Channel, *users, level: str = "read", group: str = "team") -> Group:
    """Grant the group (created if needed) `level` on the channel; `users` join the group."""
    team, _ = Group.objects.get_or_create(name=group)
    ChannelGrant.objects.update_or_create(channel=channel, group=team, defaults={"level": level})
    team.user_set.add(*users)
    return team
