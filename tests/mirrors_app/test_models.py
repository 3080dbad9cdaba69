"""Mirror validation, advice (warnings) and defaults."""

from __future__ import annotations

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from mirrors_app.models import Mirror
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory

pytestmark = pytest.mark.django_db


def _errors(mirror: Mirror) -> dict[str, list[str]]:
    """What `full_clean` finds wrong with `mirror`, by field: empty when it is valid."""
    try:
        mirror.full_clean()
    except ValidationError as error:
        return error.message_dict
    return {}


def _mirror(**fields) -> Mirror:
    """An unsaved, valid mirror; override fields to make it invalid."""
    channel = fields.pop("channel", None) or ChannelFactory(kind=fields.get("kind", "conda"))
    values = {
        "name": "forge",
        "mode": Mirror.Mode.PASSIVE,
        "kind": channel.kind,
        "source_url": "http://127.0.0.1:8000/conda-forge",
        **fields,
    }
    return Mirror(channel=channel, **values)


def test_a_valid_mirror_passes_full_clean():
    assert _errors(_mirror()) == {}


def test_defaults_are_monthly_passive_and_scheduled():
    mirror = Mirror()
    assert mirror.cron == "0 0 1 * *"
    assert mirror.status == Mirror.Status.SCHEDULED
    assert mirror.mode == Mirror.Mode.PASSIVE


def test_mode_cannot_change_after_creation():
    MirrorFactory(mode=Mirror.Mode.PASSIVE)
    mirror = Mirror.objects.get()
    mirror.mode = Mirror.Mode.ACTIVE
    assert _errors(mirror)["mode"] == [
        "The mirroring mode cannot be changed after the mirror is created."
    ]


def test_other_fields_of_an_existing_mirror_may_change():
    MirrorFactory()
    mirror = Mirror.objects.get()
    mirror.cron = "@weekly"
    mirror.source_url = "http://localhost/other"
    assert _errors(mirror) == {}


def test_mode_is_chosen_freely_at_creation():
    assert _errors(_mirror(mode=Mirror.Mode.ACTIVE)) == {}


def test_mirror_type_must_match_the_channel_type():
    errors = _errors(_mirror(channel=ChannelFactory(kind="conda", name="cc"), kind="pypi"))
    assert errors["kind"] == [
        "The mirror type 'standard python' does not match the package type of channel 'cc' "
        "('conda')."
    ]


def test_unknown_mirror_type_is_rejected():
    assert "kind" in _errors(_mirror(kind="rpm"))


def test_policy_already_on_the_channel_is_rejected():
    policy = PolicyFactory(name="strict")
    channel = ChannelFactory(name="main", policy=policy)
    errors = _errors(_mirror(channel=channel, policy=policy))
    assert errors["policy"] == [
        "Policy 'strict' is already applied to channel 'main'; leave the mirror policy empty to "
        "use the channel's policy."
    ]


def test_policy_other_than_the_channels_is_fine():
    channel = ChannelFactory(policy=PolicyFactory())
    assert _errors(_mirror(channel=channel, policy=PolicyFactory())) == {}


@pytest.mark.parametrize(
    "cron",
    ["61 * * * *", "* 24 * * *", "* * 32 * *", "* * * 13 *", "* * *", "* * * * * *", "hello"],
)
def test_bad_cron_is_rejected(cron):
    assert "cron" in _errors(_mirror(cron=cron))


def test_cron_of_the_wrong_length_explains_the_five_fields():
    (message,) = _errors(_mirror(cron="* * *"))["cron"]
    assert "expected 5 fields" in message


@pytest.mark.parametrize(
    ("cron", "normalized"),
    [
        ("@daily", "0 0 * * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@MONTHLY", "0 0 1 * *"),
        ("  0   3\t* *  1 ", "0 3 * * 1"),
        ("*/15 2-4 * * mon-fri", "*/15 2-4 * * mon-fri"),
    ],
)
def test_cron_is_normalized_to_five_fields(cron, normalized):
    mirror = _mirror(cron=cron)
    mirror.full_clean()
    assert mirror.cron == normalized


def test_source_host_off_the_allowlist_is_rejected():
    errors = _errors(_mirror(source_url="https://conda.anaconda.org/conda-forge"))
    assert "PSM_UPSTREAM_ALLOWLIST" in errors["source_url"][0]


@pytest.mark.parametrize(
    ("source_url", "message"),
    [
        (
            "http://127.0.0.2:8080\\@localhost/",
            "The URL contains a backslash, which URL parsers read differently; percent-encode it "
            "(in a host name, use its xn-- form).",
        ),
        (
            "http://[::ffff:127.0.0.2]/",
            "The host ::ffff:127.0.0.2 is not on the upstream allowlist; an administrator can add "
            "it to PSM_UPSTREAM_ALLOWLIST.",
        ),
    ],
)
def test_source_that_leads_off_the_allowlist_is_rejected(source_url, message):
    assert _errors(_mirror(source_url=source_url))["source_url"] == [message]


def test_source_host_on_the_allowlist_is_accepted(settings):
    settings.PSM_UPSTREAM_ALLOWLIST = ["anaconda.org"]
    assert _errors(_mirror(source_url="https://conda.anaconda.org/conda-forge")) == {}


def test_unknown_format_option_is_rejected():
    errors = _errors(_mirror(options={"colour": "blue"}))
    assert errors["options"] == ["unknown conda mirror options: colour"]


def test_format_options_are_cleaned_by_the_format():
    mirror = _mirror(options={"subdirs": ["linux-64"]})
    mirror.full_clean()
    assert mirror.options == {"subdirs": ["linux-64", "noarch"]}


def test_mirror_names_are_unique_within_a_channel():
    existing = MirrorFactory(name="forge")
    errors = _errors(_mirror(channel=existing.channel, name="forge"))
    assert errors[NON_FIELD_ERRORS] == ["This channel already has a mirror with this name."]


def test_same_mirror_name_in_another_channel_is_fine():
    MirrorFactory(name="forge")
    assert _errors(_mirror(name="forge")) == {}


def test_second_mirror_in_a_channel_warns():
    first = MirrorFactory()
    assert first.warnings() == []
    second = MirrorFactory(channel=first.channel)
    (warning,) = second.warnings()
    assert "more than one mirror" in warning


@pytest.mark.parametrize("cron", ["*/30 * * * *", "0 */6 * * *", "0 0,12 * * *", "@hourly"])
def test_schedule_more_often_than_daily_warns(cron):
    mirror = _mirror(cron=cron)
    mirror.full_clean()
    (warning,) = mirror.warnings()
    assert "more often than daily" in warning


@pytest.mark.parametrize("cron", ["0 0 * * *", "0 0 1 * *", "30 2 * * 1-5", "0 0 1 1 *"])
def test_daily_or_rarer_schedule_does_not_warn(cron):
    assert _mirror(cron=cron).warnings() == []


def test_invalid_cron_does_not_break_warnings():
    assert _mirror(cron="hello").warnings() == []


def test_full_pypi_mirror_warns_to_run_yearly():
    mirror = _mirror(kind="pypi", source_url="https://pypi.org/simple/")
    (warning,) = mirror.warnings()
    assert "once yearly" in warning


def test_other_python_index_does_not_warn():
    assert _mirror(kind="pypi", source_url="http://127.0.0.1/simple/").warnings() == []


def test_effective_policy_is_the_mirrors_own_else_the_channels():
    channel_policy, mirror_policy = PolicyFactory(), PolicyFactory()
    channel = ChannelFactory(policy=channel_policy)
    assert MirrorFactory(channel=channel).effective_policy() == channel_policy
    assert MirrorFactory(channel=channel, policy=mirror_policy).effective_policy() == mirror_policy
    assert MirrorFactory().effective_policy() is None
