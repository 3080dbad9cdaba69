"""Channels: names, subchannels, package types, policies, freezing and lookup by path."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from channels_app import services
from channels_app.models import Channel
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory, UserFactory

pytestmark = pytest.mark.django_db


def _errors(channel: Channel) -> dict[str, list[str]]:
    """What `full_clean` finds wrong with `channel`, by field: empty when it is valid."""
    try:
        channel.full_clean()
    except ValidationError as error:
        return error.message_dict
    return {}


@pytest.mark.parametrize("name", ["My-Channel", "UPPER", "has space", "dot.ted", "-dash", "_x", ""])
def test_channel_name_rejects_bad_characters_and_upper_case(name):
    assert "name" in _errors(Channel(name=name, kind="conda"))


@pytest.mark.parametrize("name", ["main", "conda-forge", "r_2", "0day"])
def test_channel_name_accepts_lower_case_digits_dash_underscore(name):
    assert _errors(Channel(name=name, kind="conda")) == {}


def test_top_level_channel_names_are_unique():
    ChannelFactory(name="main")
    errors = _errors(Channel(name="main", kind="pypi"))
    assert "A channel with this name already exists." in str(errors)


def test_database_rejects_a_duplicate_top_level_name():
    ChannelFactory(name="main")
    with pytest.raises(IntegrityError), transaction.atomic():
        Channel.objects.create(name="main", kind="conda")


def test_subchannel_may_share_a_top_level_channels_name():
    ChannelFactory(name="main")
    other = ChannelFactory(name="other")
    assert _errors(Channel(name="main", kind="conda", parent=other)) == {}


def test_subchannels_are_one_level_deep_only():
    top = ChannelFactory(name="top")
    sub = ChannelFactory(name="sub", parent=top)
    errors = _errors(Channel(name="deeper", kind="conda", parent=sub))
    assert errors["parent"] == ["Subchannels are one level deep only."]


def test_channel_with_subchannels_cannot_become_a_subchannel():
    top = ChannelFactory(name="top")
    ChannelFactory(name="sub", parent=top)
    other = ChannelFactory(name="other")
    top.parent = other
    assert "parent" in _errors(top)


def test_channel_cannot_be_its_own_subchannel():
    channel = ChannelFactory(name="self")
    channel.parent = channel
    assert "parent" in _errors(channel)


def test_subchannel_names_are_unique_within_their_parent():
    top = ChannelFactory(name="top")
    ChannelFactory(name="dev", parent=top)
    errors = _errors(Channel(name="dev", kind="conda", parent=top))
    assert "This channel already has a subchannel with this name." in str(errors)


@pytest.mark.parametrize(
    ("kind", "name", "label"),
    [
        ("conda", "linux-64", "conda"),
        ("conda", "noarch", "conda"),
        ("cran", "cran", "standard R"),
        ("cran", "src", "standard R"),
        ("pypi", "simple", "standard python"),
        ("pypi", "files", "standard python"),
    ],
)
def test_subchannel_may_not_hide_a_folder_of_its_parent(kind, name, label):
    parent = ChannelFactory(name="main", kind=kind)
    errors = _errors(Channel(name=name, kind=kind, parent=parent))
    assert errors["name"] == [
        f"{name!r} is a folder of every {label} channel (/api/repo/main/{name}/); "
        "choose another subchannel name."
    ]


def test_a_subchannel_name_is_reserved_by_its_parents_package_type():
    # `cran/` is a folder of R channels only; the parent's type decides what would be hidden.
    conda_parent = ChannelFactory(name="c", kind="conda")
    assert _errors(Channel(name="cran", kind="conda", parent=conda_parent)) == {}
    cran_parent = ChannelFactory(name="r", kind="cran")
    assert _errors(Channel(name="cranberry", kind="cran", parent=cran_parent)) == {}
    r_parent = ChannelFactory(name="r2", kind="cran")
    assert "name" in _errors(Channel(name="cran", kind="conda", parent=r_parent))
    # A top-level channel may be called `cran`: nothing is hidden.
    assert _errors(Channel(name="cran", kind="cran")) == {}


def test_same_subchannel_name_is_allowed_under_different_parents():
    ChannelFactory(name="dev", parent=ChannelFactory(name="one"))
    assert _errors(Channel(name="dev", kind="conda", parent=ChannelFactory(name="two"))) == {}


def test_unknown_kind_is_rejected_naming_the_known_kinds():
    errors = _errors(Channel(name="main", kind="rpm"))
    assert errors["kind"] == ["Unknown package type 'rpm'; choose one of: conda, cran, pypi."]


@pytest.mark.parametrize("kind", ["conda", "pypi", "cran"])
def test_registered_kinds_are_accepted(kind):
    assert _errors(Channel(name="main", kind=kind)) == {}


def test_channel_policy_already_used_by_one_of_its_mirrors_is_rejected():
    policy = PolicyFactory(name="strict")
    mirror = MirrorFactory(name="forge", policy=policy)
    channel = mirror.channel
    channel.policy = policy
    errors = _errors(channel)
    assert errors["policy"] == [
        "Policy 'strict' is already applied to mirror 'forge' of this channel; "
        "a policy cannot be on both."
    ]


def test_channel_policy_different_from_its_mirrors_policies_is_fine():
    mirror = MirrorFactory(policy=PolicyFactory())
    channel = mirror.channel
    channel.policy = PolicyFactory()
    assert _errors(channel) == {}


def test_freeze_records_who_and_when_and_is_idempotent():
    channel = ChannelFactory()
    user = UserFactory()
    assert services.channel_freeze(channel=channel, user=user) is True
    channel.refresh_from_db()
    assert channel.frozen is True
    assert channel.frozen_by == user
    assert channel.frozen_at is not None
    first_frozen_at = channel.frozen_at

    assert services.channel_freeze(channel=channel, user=UserFactory()) is False
    channel.refresh_from_db()
    assert channel.frozen_by == user
    assert channel.frozen_at == first_frozen_at


def test_unfreeze_clears_who_and_when_and_is_idempotent():
    channel = ChannelFactory()
    user = UserFactory()
    services.channel_freeze(channel=channel, user=user)
    assert services.channel_unfreeze(channel=channel, user=user) is True
    channel.refresh_from_db()
    assert (channel.frozen, channel.frozen_by, channel.frozen_at) == (False, None, None)
    assert services.channel_unfreeze(channel=channel, user=user) is False


def test_get_by_path_finds_channels_and_subchannels():
    top = ChannelFactory(name="main")
    sub = ChannelFactory(name="dev", parent=top)
    ChannelFactory(name="dev")  # a top-level namesake of the subchannel
    assert Channel.objects.get_by_path("main") == top
    assert Channel.objects.get_by_path("main/dev") == sub
    assert Channel.objects.get_by_path("/main/dev/") == sub
    assert Channel.objects.get_by_path("dev") != sub
    assert sub.path == "main/dev"


@pytest.mark.parametrize("path", ["missing", "main/missing", "dev/main", "main/dev/deeper"])
def test_get_by_path_raises_does_not_exist_for_unknown_paths(path):
    ChannelFactory(name="dev", parent=ChannelFactory(name="main"))
    with pytest.raises(Channel.DoesNotExist):
        Channel.objects.get_by_path(path)


def _kind_error(channel: Channel, kind: str) -> str:
    channel.kind = kind
    return " ".join(_errors(channel)["kind"])


def test_package_type_cannot_change_once_the_channel_has_mirrors_packages_or_a_pin(admin_user):
    from channels_app.models import Package

    with_mirror = MirrorFactory(channel=ChannelFactory(kind="conda")).channel
    assert "cannot change" in _kind_error(with_mirror, "pypi")
    # Packages stay when their mirror is deleted without them: they count as well.
    with_packages = ChannelFactory(kind="cran")
    Package.objects.create(channel=with_packages, unit="src/contrib", filename="a_1.0.tar.gz")
    assert "cannot change" in _kind_error(with_packages, "conda")
    frozen = ChannelFactory(kind="conda")
    services.channel_freeze(channel=frozen, user=admin_user)
    assert "Unfreeze it first" in _kind_error(frozen, "cran")
    # A subchannel would come to hide a folder of the parent's new type.
    parent = ChannelFactory(name="team", kind="conda")
    ChannelFactory(name="simple", parent=parent, kind="conda")
    assert "simple would hide folders" in _kind_error(parent, "pypi")


def test_an_empty_channel_changes_type_and_serves_the_new_types_index(client, admin_user):
    channel = ChannelFactory(name="fresh", kind="conda")
    assert client.get("/api/repo/fresh/noarch/repodata.json").status_code == 200  # published
    channel.kind = "pypi"
    assert _errors(channel) == {}
    assert services.channel_update(channel=channel, user=admin_user) == ["kind"]
    # The old type's index is gone, the new one is there at once (no run needed).
    assert client.get("/api/repo/fresh/noarch/repodata.json").status_code == 404
    assert client.get("/api/repo/fresh/simple/").status_code == 200
    # A subchannel keeps its own type: a channel of another type may sit below.
    assert _errors(ChannelFactory(name="dev", parent=channel, kind="cran")) == {}
