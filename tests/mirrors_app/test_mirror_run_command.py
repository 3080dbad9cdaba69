"""`manage.py mirror_run`: run a mirror in the foreground and say what happened."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory, SyncRunFactory

pytestmark = pytest.mark.django_db
State = SyncRun.State


def _run(*args: str) -> str:
    out = StringIO()
    call_command("mirror_run", *args, stdout=out)
    return out.getvalue()


def test_runs_the_mirror_synchronously_and_prints_a_summary(conda_upstream):
    mirror = MirrorFactory(name="forge", channel=ChannelFactory(name="main"))
    mirror.source_url = conda_upstream.url
    mirror.save()
    output = _run("forge")
    run = SyncRun.objects.get()
    assert output.strip() == (
        f"Run #{run.pk} of 'forge' (main): completed; "
        "seen 3, filtered 0, ingested 3, downloaded 0, failed 0"
    )
    assert run.state == State.COMPLETED
    assert run.trigger == SyncRun.Trigger.MANUAL
    assert Mirror.objects.get().status == Mirror.Status.COMPLETED


def test_restart_flag_records_a_restart(conda_upstream):
    MirrorFactory(name="forge", source_url=conda_upstream.url)
    assert "completed" in _run("forge", "--restart")
    assert SyncRun.objects.get().trigger == SyncRun.Trigger.RESTART


def test_unknown_mirror_name_is_an_error():
    MirrorFactory(name="forge")
    with pytest.raises(CommandError, match="No mirror named 'nope'"):
        _run("nope")


def test_unknown_mirror_in_the_given_channel_is_an_error():
    MirrorFactory(name="forge", channel=ChannelFactory(name="main"))
    with pytest.raises(CommandError, match="No mirror named 'forge' in 'other'"):
        _run("forge", "--channel", "other")


def test_name_shared_by_mirrors_in_several_channels_asks_for_the_channel():
    MirrorFactory(name="forge", channel=ChannelFactory(name="one"))
    MirrorFactory(name="forge", channel=ChannelFactory(name="two"))
    with pytest.raises(CommandError, match="say which with --channel"):
        _run("forge")
    assert not SyncRun.objects.exists()


def test_channel_option_picks_the_mirror(conda_upstream):
    MirrorFactory(name="forge", channel=ChannelFactory(name="one"))
    chosen = MirrorFactory(name="forge", channel=ChannelFactory(name="two"))
    chosen.source_url = conda_upstream.url
    chosen.save()
    assert "(two): completed" in _run("forge", "--channel", "two")
    assert SyncRun.objects.get().mirror == chosen


def test_channel_option_accepts_a_subchannel_path(conda_upstream):
    top = ChannelFactory(name="main")
    MirrorFactory(name="forge", channel=top)
    sub_mirror = MirrorFactory(
        name="forge", channel=ChannelFactory(name="dev", parent=top), source_url=conda_upstream.url
    )
    # A top-level channel named like the subchannel must not be confused with it.
    MirrorFactory(name="forge", channel=ChannelFactory(name="dev"))
    assert "(main/dev): completed" in _run("forge", "--channel", "main/dev")
    assert SyncRun.objects.get().mirror == sub_mirror


def test_failing_upstream_is_an_error_with_the_reason_and_the_run_failed(conda_upstream):
    conda_upstream.write("noarch/repodata.json", b"{broken")
    conda_upstream.write("linux-64/repodata.json", b"{broken")
    MirrorFactory(name="forge", source_url=conda_upstream.url)
    with pytest.raises(CommandError) as caught:
        _run("forge")
    assert f"{conda_upstream.url}/noarch/repodata.json" in str(caught.value)
    assert "not valid JSON" in str(caught.value)
    run = SyncRun.objects.get()
    assert run.state == State.FAILED
    assert run.error == str(caught.value)


def test_busy_mirror_is_an_error():
    mirror = MirrorFactory(name="forge")
    active = SyncRunFactory(mirror=mirror, state=State.RUNNING)
    with pytest.raises(CommandError, match=f"already has a run in progress \\(run #{active.pk}"):
        _run("forge")
    assert SyncRun.objects.count() == 1
