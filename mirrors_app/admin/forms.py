"""The form of the mirror admin's add and change pages."""

from __future__ import annotations

from django import forms
from django.utils.html import format_html, format_html_join

from channels_app.formats import FORMATS, kind_choices, kind_labels

from .. import services
from ..models import Mirror

SECRETS_HELP = (
    " Secrets in the URL (password, /t/<token>/, query values) are shown as ***: leave them "
    "so to keep them, or type new ones. A *** is kept only for the same scheme, host and port."
)
RUN_NOW_HELP = (
    "Start the mirror when you click Save (or use Save & Run). Otherwise your changes are saved "
    "and the mirror runs the next time its frequency says so."
)


class HttpsURLField(forms.URLField):
    """A URL form field that reads a bare host name as https (Django 6's default)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"assume_scheme": "https", **kwargs})


class MirrorForm(forms.ModelForm):
    kind = forms.ChoiceField(
        choices=kind_choices(), label="Mirror type", help_text=Mirror.kind.field.help_text
    )
    run_now = forms.BooleanField(required=False, label="Run now", help_text=RUN_NOW_HELP)
    # Shown only once checking a new source URL found problems (see _post_clean).
    source_confirmed = forms.BooleanField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Mirror
        fields = ["channel", "name", "mode", "source_url", "kind", "cron", "policy", "options"]
        widgets = {"mode": forms.RadioSelect}
        field_classes = {"source_url": HttpsURLField}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            # The URL's secrets are write-only: shown as ***, kept when left so
            # (Mirror.source_url_with_secrets, at validation).
            shown = self.instance.source_url_redacted
            if "source_url" in self.fields:
                self.initial["source_url"] = shown
                self.fields["source_url"].help_text += SECRETS_HELP
            else:  # shown read-only (view permission only): the page reads the instance
                self.instance.source_url = shown
        if "options" in self.fields:
            # The admin renders help text as HTML: the examples are escaped.
            examples = format_html_join(
                "", "<br>{}: <code>{}</code>", ((f.label, f.options_help) for f in FORMATS.values())
            )
            filtered = (f for f in FORMATS.values() if f.capabilities.filters_files)
            self.fields["options"].help_text = format_html(
                "Type-specific options as JSON; {} mirrors are filtered by theirs, before the "
                "policy (see the README). Examples:{}",
                kind_labels(filtered, joined="and"),
                examples,
            )

    def clean(self):
        cleaned_data = super().clean()
        # Checked here, on the name field: on the change page `channel` is read-only, so Django
        # would skip the unique (channel, name) constraint and the save would fail with a 500.
        channel = cleaned_data.get("channel") if "channel" in self.fields else self.instance.channel
        name = cleaned_data.get("name")
        if channel and name:
            clash = Mirror.objects.filter(channel=channel, name=name).exclude(pk=self.instance.pk)
            if clash.exists():
                self.add_error("name", "This channel already has a mirror with this name.")
        return cleaned_data

    def _post_clean(self) -> None:
        super()._post_clean()  # validates the mirror (and takes the URL's secrets back)
        if self._errors or self.cleaned_data.get("source_confirmed"):
            return
        problems = services.mirror_check_source(mirror=self.instance)
        if not problems:
            return
        verb = "Save" if self.instance.pk else "Create"
        label = FORMATS[self.instance.kind].label
        self.fields["source_confirmed"].widget = forms.CheckboxInput()
        # The bound field exists already (it was cleaned) and keeps its own label.
        self[
            "source_confirmed"
        ].label = f"{verb} anyway: I know the source does not look like a {label} repository"
        self.add_error(
            None,
            [*problems, f"Check the source URL, or tick \u201c{verb} anyway\u201d to save it."],
        )
