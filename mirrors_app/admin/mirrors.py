"""The mirror admin: the All Mirrors list, the add and change pages, and the actions on
selected mirrors; its own per-mirror pages are in `pages`."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Q
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.utils.translation import ngettext

from channels_app.formats import kind_choices, kind_label
from channels_app.models import Channel
from channels_app.permissions import may as may_on_channel
from psm.input import StorableJSONField
from psm.permissions import RowPermissionsAdmin
from psm.redaction import redact, refers_to_secret

from .. import live, reports, services
from ..models import Mirror, SyncRun
from ..permissions import channels_allowing
from .forms import MirrorForm
from .pages import MirrorPages, download, for_admin

#: What a row action does, where its label is short.
ROW_LINK_TITLES = {"Dependency report": "Download dependency report (CSV)"}
#: The delete confirmation's box "delete its packages too" (unticked: they stay).
WITH_PACKAGES = "with_packages"


class KindFilter(admin.SimpleListFilter):
    """The type filter, with the labels of the Type column (the formats registry's)."""

    title = "type"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return kind_choices()

    def queryset(self, request, queryset):
        return queryset.filter(kind=self.value()) if self.value() else queryset


def _warnings_summary(warnings: str) -> str:
    """A run's warnings in a table cell: how many, and the first."""
    lines = warnings.splitlines()
    if not lines:
        return ""
    more = f" (and {len(lines) - 1:,} more: see the run)" if len(lines) > 1 else ""
    return f"{ngettext('%d warning', '%d warnings', len(lines)) % len(lines)}: {lines[0]}{more}"


@admin.register(Mirror)
class MirrorAdmin(MirrorPages, RowPermissionsAdmin, admin.ModelAdmin):
    """Mirrors: those of subchannels need the Subchannel mirrors permissions, the others the
    Channel mirrors ones (mirrors_app/permissions.py)."""

    form = MirrorForm
    formfield_overrides = {models.JSONField: {"form_class": StorableJSONField}}
    permission_field = "channel"
    list_display = [
        "name",
        "channel_link",
        "kind_label",
        "mode",
        "status_display",
        "last_synced_at",
    ]  # and the Actions column (get_list_display)
    list_filter = [KindFilter, "mode", "status"]
    # The source URL is searched as shown (redacted; get_search_results), never as stored: a
    # search on it would guess its secrets a character at a time.
    search_fields = ["name", "channel__name", "channel__parent__name"]
    search_help_text = "Mirror name, channel name or source URL."
    sortable_by = ["name", "kind_label", "mode", "status_display", "last_synced_at"]
    actions = ["run_now", "stop", "restart", "download_dependency_report", "delete_selected"]

    class Media:
        js = ["mirrors_app/progress.js"]  # live status (status_display)

    readonly_fields = [
        "status_display",
        "last_synced_at",
        "next_run",
        "applied_policy",
        "recent_runs",
    ]

    def get_queryset(self, request):
        return for_admin(super().get_queryset(request))

    def get_search_results(self, request, queryset, search_term):
        terms = search_term.lower().split()
        if not terms:
            return queryset, False
        shown = {pk: redact(url).lower() for pk, url in queryset.values_list("pk", "source_url")}
        # Every term must match somewhere, as in Django's own search: a field or the shown URL.
        for term in terms:
            fields = Q(
                *(Q(**{f"{f}__icontains": term}) for f in self.search_fields), _connector="OR"
            )
            in_url = [pk for pk, url in shown.items() if term in url]
            queryset = queryset.filter(fields | Q(pk__in=in_url))
        return queryset, False

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        # `?source_url__startswith=…` would tell, a character at a time, the URL's secrets.
        return not refers_to_secret(lookup) and super().lookup_allowed(lookup, value, request)

    def get_fieldsets(self, request, obj=None):
        form_fields = ["channel", "name", "mode", "source_url", "kind", "cron"]
        if obj is None or self.has_change_permission(request, obj):
            # Form fields, not columns: a read-only page (view permission only) has no form,
            # and Django would look `run_now` up on the admin, where it is the bulk action.
            form_fields.insert(form_fields.index("kind") + 1, "source_confirmed")
            form_fields.append("run_now")
        fieldsets = [
            (None, {"fields": form_fields}),
            ("Assign mirror policy", {"fields": ["policy", "applied_policy"]}),
            ("Type-specific options", {"fields": ["options"], "classes": ["collapse"]}),
        ]
        if obj is not None:
            status = ["status_display", "last_synced_at", "next_run", "recent_runs"]
            fieldsets.append(("Status", {"fields": status}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if obj is not None:
            fields += ["mode", "channel"]  # the mode of an established mirror cannot change
        return fields

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "channel":
            # Offer only the channels (or subchannels) the user may create mirrors in.
            kwargs["queryset"] = channels_allowing(request.user, "add").select_related("parent")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        channel = initial.get("channel")
        if isinstance(channel, str) and channel.isdigit():
            # Only a channel offered in the form: a hidden one must not show through its kind.
            found = channels_allowing(request.user, "add").filter(pk=channel).first()
            if found is not None:
                initial.setdefault("kind", found.kind)
        return initial

    def save_model(self, request, obj, form, change) -> None:
        run_now = form.cleaned_data.get("run_now") or "_saveandrun" in request.POST
        try:
            services.mirror_save(mirror=obj, user=request.user, run_now=run_now)
        except services.MirrorBusy as exc:
            self.message_user(request, f"Saved, but not started: {exc}", messages.WARNING)
        else:
            if run_now:
                self.message_user(request, f"Mirror {obj.name!r} is queued to run now.")
        for warning in obj.warnings():
            self.message_user(request, warning, messages.WARNING)

    def delete_model(self, request, obj) -> None:
        request._psm_channel_id = obj.channel_id  # where response_delete goes back to
        self._delete(request, obj)

    def _delete(self, request, mirror: Mirror) -> None:
        """Delete the mirror, with its packages if the confirmation page's box was ticked."""
        with_packages = request.POST.get(WITH_PACKAGES) == "on"
        count = reports.package_holdings(mirror)["packages"]
        services.mirror_delete(mirror=mirror, with_packages=with_packages, user=request.user)
        if count:
            fate = (
                "leave the channel at its next publish" if with_packages else "stay in the channel"
            )
            packages = ngettext("%d package", "%d packages", count) % count
            self.message_user(
                request, f"Mirror {mirror.name!r}: its {packages} {fate} ({mirror.channel.path})."
            )

    def render_delete_form(self, request, context):
        # What becomes of the packages, and the choice to delete them too (not by default).
        mirror = context.get("object")
        if mirror is not None:
            context["holdings"] = reports.package_holdings(mirror)
            context["with_packages_field"] = WITH_PACKAGES
            # Breadcrumbs that lead to no 403: All Mirrors needs its own permission.
            channel = mirror.channel
            if any(may_on_channel(request.user, a, channel) for a in ("view", "change")):
                context["channel_url"] = reverse(
                    "admin:channels_app_channel_change", args=[channel.pk]
                )
            if self.has_view_permission(request, mirror):
                context["mirror_url"] = reverse("admin:mirrors_app_mirror_change", args=[mirror.pk])
        return super().render_delete_form(request, context)

    def get_deleted_objects(self, objs, request):
        # A mirror's runs go with it: deleting a mirror needs no separate "delete sync run" right.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed.discard(SyncRun._meta.verbose_name)
        return deleted, counts, perms_needed, protected

    # After a save or delete Django returns to All Mirrors, a 403 for users without "view all
    # mirrors" (e.g. who came from a channel's "Create mirror"): send them to the channel.
    def _response_post_save(self, request, obj):
        if request.user.has_perm("mirrors_app.view_all_mirrors"):
            return super()._response_post_save(request, obj)
        return self._back_to_channel(request, obj.channel_id)

    def response_delete(self, request, obj_display, obj_id):
        response = super().response_delete(request, obj_display, obj_id)
        if request.user.has_perm("mirrors_app.view_all_mirrors") or response.status_code != 302:
            return response
        return self._back_to_channel(request, getattr(request, "_psm_channel_id", None))

    def _back_to_channel(self, request, channel_id):
        channel = Channel.objects.filter(pk=channel_id).first() if channel_id else None
        if channel and any(
            may_on_channel(request.user, action, channel) for action in ("view", "change")
        ):
            return redirect("admin:channels_app_channel_change", channel_id)
        return redirect("admin:index")

    def delete_queryset(self, request, queryset) -> None:
        for mirror in queryset:
            self._delete(request, mirror)

    # --- The All Mirrors list -----------------------------------------------------------------

    def changelist_view(self, request, extra_context=None):
        if not request.user.has_perm("mirrors_app.view_all_mirrors"):
            raise PermissionDenied("The All Mirrors view needs the 'view all mirrors' permission.")
        extra_context = {**(extra_context or {}), "title": "All Mirrors"}
        return super().changelist_view(request, extra_context)

    def get_model_perms(self, request):
        perms = super().get_model_perms(request)
        if not request.user.has_perm("mirrors_app.view_all_mirrors"):
            perms = {key: False for key in perms}  # hide the All Mirrors entry from the index
        return perms

    @admin.display(description="Channel", ordering="channel__name")
    def channel_link(self, mirror: Mirror):
        url = reverse("admin:channels_app_channel_change", args=[mirror.channel_id])
        return format_html("<a href='{}'>{}</a>", url, mirror.channel.path)

    @admin.display(description="Type", ordering="kind")
    def kind_label(self, mirror: Mirror) -> str:
        return kind_label(mirror.kind)

    @admin.display(description="Mirroring status", ordering="status")
    def status_display(self, mirror: Mirror):
        if mirror.pk is None:
            return mirror.status_label
        return live.status_cell(mirror, reverse("admin:mirrors_app_mirror_progress"))

    def get_list_display(self, request):
        # The Actions cell depends on the user: bound to this request's.
        user, back = request.user, request.get_full_path()

        @admin.display(description="Actions")
        def row_actions(mirror: Mirror):
            return self.row_actions_html(user, mirror, back=back)

        return [*super().get_list_display(request), row_actions]

    def row_links(self, user, mirror: Mirror, *, back: str = "") -> list[tuple[str, str]]:
        """(label, URL) of the actions on a listed mirror that its state allows and `user` may
        take, so that none answers 403 or "not running": the rows of All Mirrors and of the
        channel page. `back`: where a command returns to. Only for mirrors listed to the user
        (their channel is one they may know), so a permission is one `has_perm`."""
        may = {
            action: user.has_perm(self.rules.perm_for(action, mirror))
            for action in ("run", "stop", "restart", "report", "delete")
        }
        status = Mirror.Status
        shown = [
            ("See details", "details", True),
            ("Run now", "run", may["run"] and not mirror.is_active),
            ("Stop", "stop", may["stop"] and mirror.status in (status.QUEUED, status.RUNNING)),
            # A new run from the beginning: for a mirror that ran before and is idle now.
            (
                "Restart",
                "restart",
                may["restart"]
                and mirror.status in (status.COMPLETED, status.STOPPED, status.FAILED),
            ),
            (
                "Dependency report",  # short, for the column to fit; the link's title says all
                "dependency_report",
                may["report"] and reports.dependency_report_unavailable(mirror) is None,
            ),
            ("Delete", "delete", may["delete"]),
        ]
        query = f"?{urlencode({'next': back})}" if back else ""
        return [
            (
                label,
                reverse(f"admin:mirrors_app_mirror_{name}", args=[mirror.pk])
                + (query if name in self.COMMANDS else ""),
            )
            for label, name, allowed in shown
            if allowed
        ]

    def row_actions_html(self, user, mirror: Mirror, *, back: str = ""):
        """`row_links` as a table cell: one link per line, so the column stays narrow."""
        return format_html_join(
            mark_safe("<br>"),
            "<a class='nowrap' href='{}' title='{}'>{}</a>",
            (
                (url, ROW_LINK_TITLES.get(label, label), label)
                for label, url in self.row_links(user, mirror, back=back)
            ),
        )

    @admin.display(description="Next scheduled run")
    def next_run(self, mirror: Mirror) -> str:
        return f"{mirror.next_run_at():%Y-%m-%d %H:%M %Z} (cron {mirror.cron})"

    @admin.display(description="View applied policy")
    def applied_policy(self, mirror: Mirror):
        policy = mirror.effective_policy() if mirror.pk else None
        if policy is None:
            return "No policy: every package of the mirror type is mirrored."
        source = "the mirror's own policy" if mirror.policy_id else "the channel's policy"
        url = reverse("admin:policies_app_policy_change", args=[policy.pk])
        return format_html(
            "<a href='{}'>{}</a> ({}){}",
            url,
            policy.name,
            source,
            format_html("<br>{}", policy.description) if policy.description else "",
        )

    @admin.display(description="Recent runs")
    def recent_runs(self, mirror: Mirror):
        runs = mirror.runs.all()[:10]
        rows = format_html_join(
            "",
            "<tr><td><a href='{}'>#{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td></tr>",
            (
                (
                    reverse("admin:mirrors_app_syncrun_change", args=[r.pk]),
                    r.pk,
                    r.get_state_display(),
                    r.get_trigger_display(),
                    f"{r.created_at:%Y-%m-%d %H:%M}",
                    f"{r.seen:,} read / {r.filtered:,} filtered / {r.ingested:,} ingested",
                    r.error or _warnings_summary(r.warnings),
                )
                for r in runs
            ),
        )
        return format_html(
            "<table><tr><th>Run</th><th>State</th><th>Trigger</th><th>Queued</th>"
            "<th>Counts</th><th>Error or warnings</th></tr>{}</table>",
            rows or mark_safe("<tr><td colspan='6'>No runs yet.</td></tr>"),
        )

    # --- Actions on selected mirrors ----------------------------------------------------------

    @admin.action(permissions=["run"], description="Run selected mirrors now")
    def run_now(self, request, queryset) -> None:
        queryset = self.permitted(request, "run", queryset)
        self._bulk(
            request, queryset, services.mirror_run_now, "%d mirror queued.", "%d mirrors queued."
        )

    @admin.action(permissions=["stop"], description="Stop selected running mirrors")
    def stop(self, request, queryset) -> None:
        queryset = self.permitted(request, "stop", queryset)
        self._bulk(
            request, queryset, services.mirror_stop, "%d mirror stopping.", "%d mirrors stopping."
        )

    @admin.action(
        permissions=["restart"], description="Restart selected mirrors from the beginning"
    )
    def restart(self, request, queryset) -> None:
        queryset = self.permitted(request, "restart", queryset)
        self._bulk(
            request,
            queryset,
            services.mirror_restart,
            "%d mirror restarted.",
            "%d mirrors restarted.",
        )

    @admin.action(permissions=["report"], description="Download dependency report")
    def download_dependency_report(self, request, queryset):
        """One mirror with a report: its CSV; several: a zip of their CSVs. Each selected
        mirror without a report gets a message saying why."""
        found: list[tuple[str, str]] = []
        for mirror in self.permitted(request, "report", queryset):
            rows = reports.dependency_report(mirror)
            if rows is None:
                reason = reports.dependency_report_unavailable(mirror)
                self.message_user(request, reason, messages.WARNING)
            else:
                text = reports.as_csv(rows, reports.REPORT_COLUMNS)
                found.append((reports.report_filename(mirror, "dependency-report"), text))
        if not found:
            return None  # back to the list, with the messages
        if len(found) == 1:
            name, text = found[0]
            return download(text, name)
        archive = reports.reports_zip(found)
        return download(archive, reports.DEPENDENCY_REPORTS_ZIP, "application/zip")

    @admin.action(permissions=["delete"], description=django_delete_selected.short_description)
    def delete_selected(self, request, queryset):
        """Django's, whose confirmation page also says what the mirrors brought and offers to
        delete their packages too (delete_queryset reads the choice)."""
        response = django_delete_selected(self, request, queryset)
        if isinstance(response, TemplateResponse):
            holdings = [reports.package_holdings(m) for m in queryset]
            response.context_data["holdings"] = {
                key: sum(h[key] for h in holdings) for key in ("packages", "stored", "stored_bytes")
            }
            response.context_data["with_packages_field"] = WITH_PACKAGES
        return response

    def _bulk(self, request, queryset, service, singular: str, plural: str) -> None:
        done = 0
        for mirror in queryset:
            try:
                service(mirror=mirror, user=request.user)
                done += 1
            except (services.MirrorBusy, services.MirrorNotRunning) as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, ngettext(singular, plural, done) % done)

    def has_run_permission(self, request, obj=None) -> bool:
        return self.may(request, "run", obj)

    def has_stop_permission(self, request, obj=None) -> bool:
        return self.may(request, "stop", obj)

    def has_restart_permission(self, request, obj=None) -> bool:
        return self.may(request, "restart", obj)

    def has_report_permission(self, request, obj=None) -> bool:
        return self.may(request, "report", obj)
