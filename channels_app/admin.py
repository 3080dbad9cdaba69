from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.utils.translation import ngettext

from psm.permissions import RowPermissionsAdmin, rules_for
from psm.redaction import redact, refers_to_secret

from . import services, verification
from .formats import kind_choices, kind_label
from .models import Channel, ChannelGrant, Package
from .permissions import GRANT, filter_allowed, may, may_some, visible_channels


class ChannelGrantInline(admin.TabularInline):
    """Which groups read, write or manage this channel (and its subchannels). Shown to those
    who may see the channel; edited with Manage on the channel's category."""

    model = ChannelGrant
    extra = 0
    fields = ["group", "level"]
    verbose_name = "group access"
    verbose_name_plural = "Group access (a grant here also covers the subchannels)"

    def has_view_permission(self, request, obj=None) -> bool:
        # Without a row (Django's inline queryset asks so): whether some channel is visible.
        if obj is None:
            return may_some(request.user, "view")
        return may(request.user, "view", obj)

    def has_add_permission(self, request, obj=None) -> bool:
        return obj is not None and may(request.user, GRANT, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return self.has_add_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.has_add_permission(request, obj)


@admin.register(Channel)
class ChannelAdmin(RowPermissionsAdmin, admin.ModelAdmin):
    """Channels and subchannels: each row needs the permission of its own category, or a grant
    on it (or on its parent)."""

    list_display = [
        "path_display",
        "kind_label",
        "visibility",
        "frozen",
        "policy",
        "mirror_count",
        "created_at",
    ]
    list_filter = ["kind", "visibility", "frozen"]
    search_fields = ["name", "description", "parent__name"]
    list_select_related = ["parent", "policy"]
    actions = ["freeze", "unfreeze"]
    fields = [
        "name",
        "description",
        "kind",
        "parent",
        "visibility",
        "policy",
        "test_package",
        "frozen_info",
        "mirrors_table",
        "subchannels_table",
        "verification_problems",
    ]
    readonly_fields = [
        "test_package",
        "frozen_info",
        "mirrors_table",
        "subchannels_table",
        "verification_problems",
    ]
    inlines = [ChannelGrantInline]
    permission_field = "parent"  # a parent makes it a subchannel

    class Media:
        # Live status of the mirrors table's rows (served by mirrors_app, found by URL name).
        js = ["mirrors_app/progress.js"]

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # grants go on a saved channel

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is None or obj.parent_id:  # subchannels are one level deep
            fields = [f for f in fields if f != "subchannels_table"]
        return fields

    # --- The channel's own page: its Manage menu, frozen banner, freeze and unfreeze ----------

    def get_urls(self):
        custom = [
            path(
                f"<int:pk>/{name}/",
                self.admin_site.admin_view(self.freeze_view),
                {"unfreeze": name == "unfreeze"},
                name=f"channels_app_channel_{name}",
            )
            for name in ("freeze", "unfreeze")
        ]
        return custom + super().get_urls()

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["manage_links"] = self.manage_links(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def manage_links(self, request, channel: Channel) -> list[tuple[str, str]]:
        """(label, URL) of the Manage menu: what the user may do to this channel from its page."""
        user, links = request.user, []
        if self.has_freeze_permission(request, channel):
            name = "unfreeze" if channel.frozen else "freeze"
            url = reverse(f"admin:channels_app_channel_{name}", args=[channel.pk])
            links.append((name.capitalize(), url))
        mirror_rules = rules_for(channel.mirrors.model)
        if mirror_rules.may(user, "add", channel.mirrors.model(channel=channel)):
            url = reverse("admin:mirrors_app_mirror_add") + f"?channel={channel.pk}"
            links.append(("Add mirror", url))
        if channel.parent_id is None and may(user, "add", Channel(parent=channel)):
            query = urlencode({"parent": channel.pk, "kind": channel.kind})
            links.append(("Add subchannel", f"{reverse('admin:channels_app_channel_add')}?{query}"))
        inlines = self.get_inline_instances(request, channel)  # those the user may see
        if any(isinstance(inline, ChannelGrantInline) for inline in inlines):
            links.append(("Grants", "#grants-group"))  # the inline, on this page
        return links

    def freeze_view(self, request, pk: int, unfreeze: bool):
        """Freeze or unfreeze one channel: GET asks to confirm, POST does it."""
        channel = self.get_object(request, str(pk))
        if channel is None:
            raise Http404("No such channel.")
        if not self.has_freeze_permission(request, channel):
            raise PermissionDenied
        back = reverse("admin:channels_app_channel_change", args=[channel.pk])
        if request.method == "POST":
            service = services.channel_unfreeze if unfreeze else services.channel_freeze
            done = service(channel=channel, user=request.user)
            state = "unfrozen" if unfreeze else "frozen"
            self.message_user(
                request,
                f"Channel {channel.path!r} {'is now' if done else 'was already'} {state}.",
                messages.SUCCESS if done else messages.WARNING,
            )
            return redirect(back)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{'Unfreeze' if unfreeze else 'Freeze'} channel {channel.path}",
            "opts": self.opts,
            "channel": channel,
            "unfreeze": unfreeze,
            "back": back,
        }
        return TemplateResponse(request, "admin/channels_app/channel/confirm_freeze.html", context)

    def has_module_permission(self, request) -> bool:
        # Members of a granted group may hold no channel permission at all.
        return super().has_module_permission(request) or self.may(request, "view")

    def save_model(self, request, obj, form, change) -> None:
        if change:
            services.channel_update(channel=obj, user=request.user)
        else:
            services.channel_create(channel=obj, user=request.user)

    def delete_model(self, request, obj) -> None:
        services.channel_delete(channel=obj, user=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for channel in queryset:
            services.channel_delete(channel=channel, user=request.user)

    def save_formset(self, request, form, formset, change) -> None:
        if formset.model is not ChannelGrant:
            return super().save_formset(request, form, formset, change)
        # Saved through the service (audited, one diff); the change message leaves grants out.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        if not formset.has_changed() or not may(request.user, GRANT, form.instance):
            return None
        grants = [
            (f.cleaned_data["group"], f.cleaned_data["level"])
            for f in formset.forms
            if f.cleaned_data and not f.cleaned_data.get("DELETE")
        ]
        services.channel_grants_set(channel=form.instance, grants=grants, user=request.user)
        return None

    def get_queryset(self, request):
        return super().get_queryset(request).with_mirror_count()

    def get_object(self, request, object_id, from_field=None):
        channel = super().get_object(request, object_id, from_field)
        if channel is not None:
            channel.shown_to = request.user  # the Mirrors tab lists what this user may see
        return channel

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "kind":
            # Choices come from the formats registry, not from the model (no migration per type).
            from django import forms

            return forms.ChoiceField(
                choices=kind_choices(), label="Package type", help_text=db_field.help_text
            )
        if db_field.name == "visibility":
            # Optional in the form: a form that leaves it out keeps the default (public).
            field = super().formfield_for_dbfield(db_field, request, **kwargs)
            field.required = False
            return field
        if db_field.name == "parent":
            # Private channels one may not see are not offered (nor named) as parents.
            kwargs["queryset"] = visible_channels(request.user, Channel.objects.top_level())
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="Channel", ordering="name")
    def path_display(self, channel: Channel) -> str:
        return channel.path

    @admin.display(description="Package type", ordering="kind")
    def kind_label(self, channel: Channel) -> str:
        return kind_label(channel.kind)

    @admin.display(description="Mirrors", ordering="_mirror_count")
    def mirror_count(self, channel: Channel) -> int:
        return channel._mirror_count

    @admin.display(description="Test a package")
    def test_package(self, channel: Channel):
        if channel.pk is None:
            return "-"
        # The page is the mirrors' (their deciders answer); this app links to it by name.
        url = reverse("admin:mirrors_app_test_package") + f"?channel={channel.pk}"
        return format_html(
            "<a href='{}'>Test a package</a>: what this channel's policies decide of a package "
            "and version, whether or not upstream has it yet.",
            url,
        )

    @admin.display(description="Frozen")
    def frozen_info(self, channel: Channel) -> str:
        if not channel.frozen:
            return "No: each run publishes its result at once."
        by = channel.frozen_by.get_username() if channel.frozen_by else "unknown"
        return (
            f"Yes, by {by} at {channel.frozen_at:%Y-%m-%d %H:%M %Z}: the published index is pinned."
        )

    @admin.display(description="Mirrors")
    def mirrors_table(self, channel: Channel):
        if channel.pk is None:
            return "Save the channel first, then create its mirror."
        user = getattr(channel, "shown_to", None)
        # The mirrors' own rules (mirrors_app registers them; this app does not import it).
        mirror_rules = rules_for(channel.mirrors.model)
        mirrors = mirror_rules.filter_allowed(
            user, "view", channel.mirrors.with_related().with_run_warnings()
        )
        may_add = mirror_rules.may_some(user, "add", subchannel=bool(channel.parent_id))
        add_url = reverse("admin:mirrors_app_mirror_add") + f"?channel={channel.pk}"
        # The mirrors' admin says which actions each row offers (the All Mirrors rows' own).
        mirror_admin = self.admin_site.get_model_admin(channel.mirrors.model)
        here = reverse("admin:channels_app_channel_change", args=[channel.pk])
        progress_url = reverse("admin:mirrors_app_mirror_progress")
        rows = format_html_join(
            "",
            "<tr><td><a href='{}'>{}</a></td><td>{}</td><td>{}</td>"
            "<td><div data-mirror-progress='{}' data-progress-url='{}'>{}</div></td><td>{}</td>"
            "<td>{}</td></tr>",
            (
                (
                    reverse("admin:mirrors_app_mirror_change", args=[m.pk]),
                    m.name,
                    kind_label(m.kind),
                    m.get_mode_display(),
                    m.pk,
                    progress_url,  # progress.js (the mirrors' Media) keeps the status live
                    m.status_label,
                    f"{m.last_synced_at:%Y-%m-%d %H:%M}" if m.last_synced_at else "never",
                    mirror_admin.row_actions_html(user, m, back=here),
                )
                for m in mirrors
            ),
        )
        return format_html(
            "<table><thead><tr><th>Name</th><th>Type</th><th>Mode</th><th>Status</th>"
            "<th>Last updated</th><th>Actions</th></tr></thead><tbody>{}</tbody></table>{}",
            rows or mark_safe("<tr><td colspan='6'>No mirrors yet.</td></tr>"),
            format_html("<p><a class='addlink' href='{}'>Create mirror</a></p>", add_url)
            if may_add
            else "",
        )

    @admin.display(description="Subchannels")
    def subchannels_table(self, channel: Channel):
        user = getattr(channel, "shown_to", None)
        # Those the user may see, as the channel list shows them (private ones only to readers).
        subchannels = filter_allowed(
            user, ("view", "change"), channel.subchannels.with_mirror_count()
        ).order_by("name")
        rows = format_html_join(
            "",
            "<tr><td><a href='{}'>{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    reverse("admin:channels_app_channel_change", args=[sub.pk]),
                    sub.name,
                    self.kind_label(sub),
                    sub.get_visibility_display().partition(" (")[0],
                    sub._mirror_count,
                    "Frozen" if sub.frozen else "No",
                )
                for sub in subchannels
            ),
        )
        return format_html(
            "<table id='subchannels'><thead><tr><th>Name</th><th>Package type</th><th>Privacy</th>"
            "<th>Mirrors</th><th>Frozen</th></tr></thead><tbody>{}</tbody></table>",
            rows or mark_safe("<tr><td colspan='5'>No subchannels.</td></tr>"),
        )

    @admin.display(description="Verification")
    def verification_problems(self, channel: Channel):
        if channel.pk is None:
            return "-"
        shown = verification.problems_shown(channel=channel)
        return render_to_string("admin/channels_app/verification.html", {"verification": shown})

    @admin.action(permissions=["freeze"], description="Freeze selected channels")
    def freeze(self, request, queryset) -> None:
        queryset = self.permitted(request, "freeze", queryset)
        count = sum(services.channel_freeze(channel=c, user=request.user) for c in queryset)
        self.message_user(
            request, ngettext("%d channel frozen.", "%d channels frozen.", count) % count
        )

    @admin.action(permissions=["freeze"], description="Unfreeze selected channels")
    def unfreeze(self, request, queryset) -> None:
        queryset = self.permitted(request, "freeze", queryset)
        count = sum(services.channel_unfreeze(channel=c, user=request.user) for c in queryset)
        self.message_user(
            request, ngettext("%d channel unfrozen.", "%d channels unfrozen.", count) % count
        )

    def has_freeze_permission(self, request, obj=None) -> bool:
        return self.may(request, "freeze", obj)


@admin.register(Package)
class PackageAdmin(admin.ModelAdmin):
    list_display = ["filename", "channel", "unit", "name", "version", "stored", "added_at"]
    list_filter = ["channel__kind"]
    search_fields = ["name", "filename"]
    list_select_related = ["channel", "channel__parent"]
    # The file's upstream URL carries its mirror's source secrets (/t/<token>/): shown redacted.
    exclude = ["upstream_url"]
    readonly_fields = ["upstream"]
    # Channels can hold hundreds of thousands of packages: skip the unfiltered COUNT(*).
    show_full_result_count = False

    @admin.display(description="Indexing status", boolean=False)
    def stored(self, package: Package) -> str:
        return "active" if package.is_stored else "passive"

    @admin.display(description="Upstream URL")
    def upstream(self, package: Package) -> str:
        return redact(package.upstream_url)

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        return not refers_to_secret(lookup) and super().lookup_allowed(lookup, value, request)

    def get_queryset(self, request):
        # Artifacts: Read shows packages of the channels one may see, never of private others.
        channels = filter_allowed(request.user, "view", Channel.objects.all())
        return super().get_queryset(request).filter(channel__in=channels)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
