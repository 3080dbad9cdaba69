"""The mirror form offers and checks the options of standard R mirrors."""

from __future__ import annotations

import pytest

from mirrors_app.models import Mirror
from tests.factories import ChannelFactory
from tests.mirrors_app.test_admin import ADD, editor, form_errors, mirror_form  # noqa: F401

pytestmark = pytest.mark.django_db


def test_the_form_shows_an_example_of_r_mirror_options(client, editor):  # noqa: F811
    html = client.get(ADD).content.decode()
    assert "standard R: <code>{&quot;packages&quot;: [&quot;ggplot2&quot;" in html
    assert "dplyr (&gt;= 1.1)" in html


def test_an_r_mirror_is_saved_with_its_filters_normalized(client, editor):  # noqa: F811
    channel = ChannelFactory(kind="cran")
    options = '{"packages": ["dplyr>=1.1", "ggplot2"], "licenses": ["mit"], "archive": true}'
    response = client.post(ADD, mirror_form(channel, options=options))
    assert response.status_code == 302
    assert Mirror.objects.get().options == {
        "packages": ["dplyr (>= 1.1)", "ggplot2"],
        "licenses": ["MIT"],
        "archive": True,
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('{"packages": ["../etc"]}', "packages: '../etc'"),
        ('{"r_version": "latest"}', "is not an R version"),
        ('{"subdirs": ["linux-64"]}', "unknown R mirror options: subdirs"),
    ],
)
def test_bad_r_mirror_options_are_refused(client, editor, options, message):  # noqa: F811
    channel = ChannelFactory(kind="cran")
    errors = form_errors(client.post(ADD, mirror_form(channel, options=options)))
    assert message in " ".join(errors["options"]), errors
    assert not Mirror.objects.exists()
