"""A mirror's source URL secrets are write-only: every writer goes through full_clean, which
takes a `***` left in place back from the stored URL, for the same origin only."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from mirrors_app import services
from mirrors_app.models import Mirror
from tests.factories import MirrorFactory

pytestmark = pytest.mark.django_db
STORED = "http://127.0.0.1:9/t/tok-123456/chan?key=v4lue"


def test_the_redacted_url_is_what_the_mirror_shows():
    mirror = MirrorFactory(source_url=STORED)
    assert mirror.source_url_redacted == "http://127.0.0.1:9/t/***/chan?key=***"


def test_saving_the_redacted_url_keeps_the_stored_secrets():
    mirror = MirrorFactory(source_url=STORED)
    mirror = Mirror.objects.get(pk=mirror.pk)
    mirror.source_url = "http://127.0.0.1:9/t/***/other?key=***"
    services.mirror_save(mirror=mirror)
    assert Mirror.objects.get().source_url == "http://127.0.0.1:9/t/tok-123456/other?key=v4lue"


def test_stars_for_another_host_are_refused_and_nothing_is_saved():
    mirror = MirrorFactory(source_url=STORED)
    mirror.source_url = "http://localhost:9/t/***/chan?key=***"
    with pytest.raises(ValidationError) as refused:
        services.mirror_save(mirror=mirror)
    assert "enter the token again" in refused.value.message_dict["source_url"][0]
    assert Mirror.objects.get().source_url == STORED


def test_a_new_mirror_cannot_send_stars():
    mirror = MirrorFactory.build(source_url="http://127.0.0.1:9/t/***/chan")
    with pytest.raises(ValidationError, match="enter the token again"):
        mirror.full_clean()


def test_a_new_secret_is_written_as_given():
    mirror = MirrorFactory(source_url=STORED)
    mirror.source_url = "http://127.0.0.1:9/t/n3w-token/chan"
    services.mirror_save(mirror=mirror)
    assert Mirror.objects.get().source_url == "http://127.0.0.1:9/t/n3w-token/chan"


def test_the_api_returns_the_url_redacted_and_documents_it(api_client, make_user):
    mirror = MirrorFactory(source_url=STORED)
    api_client.force_authenticate(make_user("mirrors_app.view_mirror"))
    answer = api_client.get(f"/api/mirrors/{mirror.pk}/")
    assert answer.json()["source_url"] == "http://127.0.0.1:9/t/***/chan?key=***"
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    described = schema["components"]["schemas"]["Mirror"]["properties"]["source_url"]
    assert "write-only" in described["description"]
