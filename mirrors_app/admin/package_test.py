"""The admin's "Test a package" page: a channel, a package name, a version and (conda) a
platform; the answer lists each mirror's decision for each file with every rule's outcome.

Linked from the channel change page (`?channel=<id>`) and from the policy change page
(`?policy=<id>`: the channels of the policy's package type, those it governs first)."""

from __future__ import annotations

from django import forms
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Exists, OuterRef, Q, Value, When
from django.template.response import TemplateResponse

from channels_app.formats import kind_label
from channels_app.models import Channel
from channels_app.permissions import filter_allowed, may_some
from policies_app.models import Policy

from ..models import Mirror
from ..package_test import MAX_NAME, MAX_PLATFORM, package_test, question_problems


class ChannelChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, channel: Channel) -> str:
        label = f"{channel.path} ({kind_label(channel.kind)})"
        return label + (" · uses this policy" if getattr(channel, "_uses", False) else "")


class PackageTestForm(forms.Form):
    channel = ChannelChoiceField(queryset=Channel.objects.none())
    name = forms.CharField(max_length=MAX_NAME, help_text="The package name, e.g. numpy.")
    version = forms.CharField(
        max_length=MAX_NAME,
        required=False,
        help_text="Optional: a version, whether or not PSM or upstream has it yet.",
    )
    platform = forms.CharField(
        max_length=MAX_PLATFORM,
        required=False,
        help_text="conda channels only, optional: a platform (subdir) such as linux-64.",
    )

    def __init__(self, *args, channels, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["channel"].queryset = channels

    def clean(self):
        data = super().clean()
        channel = data.get("channel")
        if channel is None:
            return data
        question = {key: data.get(key) or "" for key in ("name", "version", "platform")}
        for key, problem in question_problems(channel, **question).items():
            if key not in self.errors:
                self.add_error(key, problem)
        return data


def channels_to_test(user, policy: Policy | None):
    """The channels the user may see; with a policy, those of its package type, the ones it
    governs (itself or through a mirror) first."""
    channels = filter_allowed(user, "view", Channel.objects.select_related("parent"))
    if policy is None:
        return channels.order_by("parent__name", "name")
    governed = Q(policy=policy) | Exists(
        Mirror.objects.filter(channel=OuterRef("pk"), policy=policy)
    )
    return (
        channels.filter(kind=policy.package_type)
        .annotate(_uses=Case(When(governed, then=Value(True)), default=Value(False)))
        .order_by("-_uses", "parent__name", "name")
    )


def package_test_view(model_admin, request):
    """GET only: the form, and with a name the decisions (nothing is changed)."""
    if not may_some(request.user, "view"):
        raise PermissionDenied
    policy = None
    policy_id = request.GET.get("policy", "")
    if policy_id.isdigit() and request.user.has_perm("policies_app.view_policy"):
        policy = Policy.objects.filter(pk=int(policy_id)).first()
    channels = channels_to_test(request.user, policy)
    result = None
    if "name" in request.GET:
        form = PackageTestForm(request.GET, channels=channels)
        if form.is_valid():
            data = form.cleaned_data
            result = package_test(
                data["channel"],
                name=data["name"],
                version=data["version"],
                platform=data["platform"],
            )
    else:
        initial = {"channel": request.GET.get("channel") or None}
        form = PackageTestForm(initial=initial, channels=channels)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Test a package",
        "opts": model_admin.model._meta,
        "form": form,
        "policy": policy,
        "result": result,
    }
    return TemplateResponse(request, "admin/mirrors_app/test_package.html", context)
