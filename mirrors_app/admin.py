from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.utils.translation import ngettext

from channels_app import verification
from channels_app.formats import FORMATS, kind_choices
from channels_app.models import Channel
from psm.input import StorableJSONField
from psm.permissions import RowPermissionsAdmin, channels_allowing, filter_allowed, may
from psm.redaction import refers_to_secret

from . import reports, services
from .models import Mirror, SyncRun

EXCLUDED_SHOWN = 1000  # on the details page; the CSV download has them all
PREVIEW_SHOWN = 50  # entering and leaving packages listed on the policy preview page


def _download(content: bytes | str, filename: str, content_type: str = "text/csv") -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


SECRETS_HELP = (
    " Secrets in the URL (password, /t/<token>/, query values) are shown as ***: leave them "
    "so to keep them, or type new ones. A *** is kept only for the same scheme, host and port."
)
RUN_NOW_HELP = (
    "Start the mirror when you click Save (or use Save & Run). Otherwise your changes are saved "
    "and the mirror runs the next time its frequency says so."
)


def _warnings_summary(warnings: str) -> str:
    """A run's warnings in a table cell: how many, and the first."""
    lines = warnings.splitlines()
    if not lines:
        return ""
    more = f" (and {len(lines) - 1:,} more: see the run)" if len(lines) > 1 else ""
    return f"{ngettext('%d warning', '%d warnings', len(lines)) % len(lines)}: {lines[0]}{more}"


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
            self.fields["options"].help_text = format_html(
                "Type-specific options as JSON; standard python and standard R mirrors are "
                "filtered by theirs (see the README). Examples:{}",
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


@admin.register(Mirror)
class MirrorAdmin(RowPermissionsAdmin, admin.ModelAdmin):
    """Mirrors: those of subchannels need the Subchannel mirrors permissions, the others the
    Channel mirrors ones (psm/permissions.py)."""

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
        "row_actions",
    ]
    list_filter = ["kind", "mode", "status"]
    search_fields = ["name"]  # never source_url: a search or filter on it guesses its secrets
    sortable_by = ["name", "kind_label", "mode", "status_display", "last_synced_at"]
    actions = ["run_now", "stop", "restart", "download_dependency_report", "delete_selected"]
    readonly_fields = [
        "status_display",
        "last_synced_at",
        "next_run",
        "applied_policy",
        "recent_runs",
    ]

    def get_queryset(self, request):
        return self._with_related(super().get_queryset(request))

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        # `?source_url__startswith=…` would tell, a character at a time, the URL's secrets.
        return not refers_to_secret(lookup) and super().lookup_allowed(lookup, value, request)

    def _known_mirror(self, request, pk: int, *actions: str) -> Mirror:
        """The mirror, among those the user may see or do one of `actions` on: a mirror they
        may not (one of a private channel they may not read, say) is a 404, exactly like a
        missing one. The page then checks its own permission on it (a 403)."""
        mirrors = filter_allowed(request.user, ("view", "change", *actions), Mirror.objects.all())
        return get_object_or_404(self._with_related(mirrors), pk=pk)

    @staticmethod
    def _with_related(mirrors):
        return (
            mirrors.select_related("channel", "channel__parent", "policy", "channel__policy")
            .with_run_warnings()
            .prefetch_related(
                Prefetch("runs", queryset=SyncRun.objects.active(), to_attr="_active_runs")
            )
        )

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
            kwargs["queryset"] = channels_allowing(request.user, "add", Mirror).select_related(
                "parent"
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        channel = initial.get("channel")
        if isinstance(channel, str) and channel.isdigit():
            # Only a channel offered in the form: a hidden one must not show through its kind.
            found = channels_allowing(request.user, "add", Mirror).filter(pk=channel).first()
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
        services.mirror_delete(mirror=obj, user=request.user)

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
        if channel and any(may(request.user, action, channel) for action in ("view", "change")):
            return redirect("admin:channels_app_channel_change", channel_id)
        return redirect("admin:index")

    def delete_queryset(self, request, queryset) -> None:
        for mirror in queryset:
            services.mirror_delete(mirror=mirror, user=request.user)

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
        return FORMATS[mirror.kind].label if mirror.kind in FORMATS else mirror.kind

    @admin.display(description="Mirroring status", ordering="status")
    def status_display(self, mirror: Mirror):
        run = mirror.active_run() if mirror.is_active else None
        if run is None or run.state == SyncRun.State.QUEUED:
            return mirror.status_label
        detail = f"{run.step or 'starting'}: {run.seen:,} read, {run.filtered:,} filtered"
        if run.progress is not None:
            return format_html(
                "{}<br><progress max='100' value='{}'></progress> {}%<br><small>{}</small>",
                run.get_state_display(),
                run.progress,
                run.progress,
                detail,
            )
        return format_html("{}<br><small>{}</small>", run.get_state_display(), detail)

    @admin.display(description="Actions")
    def row_actions(self, mirror: Mirror):
        links = [("See details", "details")]
        if mirror.is_active:
            links.append(("Stop", "stop"))
        else:
            links += [("Run now", "run"), ("Restart", "restart")]
        return format_html_join(
            " · ",
            "<a href='{}'>{}</a>",
            (
                (reverse(f"admin:mirrors_app_mirror_{name}", args=[mirror.pk]), label)
                for label, name in links
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
            return _download(text, name)
        archive = reports.reports_zip(found)
        return _download(archive, reports.DEPENDENCY_REPORTS_ZIP, "application/zip")

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

    # --- Per-mirror pages: confirm-then-POST commands, and See details -------------------------

    COMMANDS = {
        "run": (services.mirror_run_now, "run", "Run mirror now"),
        "stop": (services.mirror_stop, "stop", "Stop running mirror"),
        "restart": (services.mirror_restart, "restart", "Restart mirror"),
    }

    def get_urls(self):
        custom = [
            path(
                f"<int:pk>/{name}/",
                self.admin_site.admin_view(self.command_view),
                {"command": name},
                name=f"mirrors_app_mirror_{name}",
            )
            for name in self.COMMANDS
        ]
        pages = {
            "details/": (self.details_view, "details"),
            "excluded.csv": (self.excluded_csv_view, "excluded_csv"),
            "dependency-report.csv": (self.dependency_report_view, "dependency_report"),
            "policy-preview/": (self.policy_preview_view, "policy_preview"),
            "policy-apply/": (self.policy_apply_view, "policy_apply"),
        }
        custom += [
            path(
                f"<int:pk>/{route}",
                self.admin_site.admin_view(view),
                name=f"mirrors_app_mirror_{name}",
            )
            for route, (view, name) in pages.items()
        ]
        return custom + super().get_urls()

    def command_view(self, request, pk: int, command: str):
        service, perm, title = self.COMMANDS[command]
        may_do = getattr(self, f"has_{perm}_permission")
        if not may_do(request):
            raise PermissionDenied
        mirror = self._known_mirror(request, pk, perm)
        if not may_do(request, mirror):
            raise PermissionDenied
        back = request.POST.get("next") or request.GET.get("next") or ""
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}):
            back = ""
        back = back or reverse("admin:mirrors_app_mirror_change", args=[pk])
        if request.method == "POST":
            try:
                run = service(mirror=mirror, user=request.user)
            except (services.MirrorBusy, services.MirrorNotRunning) as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                state = run.get_state_display().lower()
                self.message_user(request, f"Mirror {mirror.name!r}: run #{run.pk} is {state}.")
            return redirect(back)
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "mirror": mirror,
            "command": command,
            "next": back,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/mirrors_app/mirror/confirm_command.html", context)

    def _mirror(self, request, pk: int, *, change: bool = False) -> Mirror:
        """The mirror, if the user may see it (and change it, with `change`): 403 without
        the permission at all, 404 for a mirror they may not see, as for a missing one."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        mirror = self._known_mirror(request, pk)
        if not self.has_view_permission(request, mirror):
            raise PermissionDenied
        if change and not self.has_change_permission(request, mirror):
            raise PermissionDenied
        return mirror

    def details_view(self, request, pk: int):
        mirror = self._mirror(request, pk)
        details = reports.mirror_details(mirror)
        run = details["latest_run"]
        excluded = reports.excluded_packages(mirror)
        query = request.GET.get("package", "").strip()
        policy = mirror.effective_policy()
        can_see_policy = policy is not None and any(
            request.user.has_perm(f"policies_app.{perm}_policy") for perm in ("view", "change")
        )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Details of mirror {mirror.name}",
            "opts": self.model._meta,
            "details": details,
            "states": [
                (state, label, details["packages"][state])
                for state, label in reports.STATES.items()
            ],
            "run": run,
            "reasons": sorted((run.filtered_reasons if run else {}).items(), key=lambda i: -i[1]),
            "excluded": excluded[:EXCLUDED_SHOWN],
            "excluded_total": len(excluded),
            "query": query,
            "explanation": reports.explain(mirror, query) if query else None,
            "policy": policy,
            "policy_url": (
                reverse("admin:policies_app_policy_change", args=[policy.pk])
                if can_see_policy
                else ""
            ),
            "can_change": self.has_change_permission(request, mirror),
            "can_report": self.has_report_permission(request, mirror)
            and details["dependency_report"] == "available",
            "verification": verification.problems_shown(mirror=mirror),
        }
        return TemplateResponse(request, "admin/mirrors_app/mirror/details.html", context)

    def excluded_csv_view(self, request, pk: int):
        """Every package the policy keeps out, with the reason, as CSV."""
        mirror = self._mirror(request, pk)
        text = reports.as_csv(reports.excluded_packages(mirror), reports.EXCLUDED_COLUMNS)
        return _download(text, reports.report_filename(mirror, "excluded"))

    def dependency_report_view(self, request, pk: int):
        mirror = self._mirror(request, pk)
        if not self.has_report_permission(request, mirror):
            raise PermissionDenied
        rows = reports.dependency_report(mirror)
        if rows is None:
            reason = reports.dependency_report_unavailable(mirror)
            self.message_user(request, reason, messages.WARNING)
            return redirect("admin:mirrors_app_mirror_details", pk)
        text = reports.as_csv(rows, reports.REPORT_COLUMNS)
        return _download(text, reports.report_filename(mirror, "dependency-report"))

    def policy_preview_view(self, request, pk: int):
        """What applying the effective policy now would change (GET or POST: nothing is
        changed); the page offers to apply it."""
        mirror = self._mirror(request, pk, change=True)
        return self._policy_page(request, mirror, "Preview policy")

    def policy_apply_view(self, request, pk: int):
        """GET: the preview, to confirm; POST: apply the policy to what the mirror holds."""
        mirror = self._mirror(request, pk, change=True)
        if request.method != "POST":
            return self._policy_page(request, mirror, "Apply policy now")
        try:
            change = services.mirror_policy_apply(mirror=mirror, user=request.user)
        except services.MirrorBusy as exc:
            self.message_user(request, f"{exc} The run applies the policy itself.", messages.ERROR)
            return redirect("admin:mirrors_app_mirror_details", pk)
        self.message_user(
            request,
            f"Policy applied to mirror {mirror.name!r}: {change['entering']:,} packages entered, "
            f"{change['leaving']:,} left; {change['allowed']:,} kept, {change['excluded']:,} "
            "excluded. The channel is being republished.",
        )
        return redirect("admin:mirrors_app_mirror_details", pk)

    def _policy_page(self, request, mirror: Mirror, title: str):
        change = services.mirror_policy_apply(mirror=mirror, dry_run=True)
        policy = mirror.effective_policy()
        context = {
            **self.admin_site.each_context(request),
            "title": f"{title}: mirror {mirror.name}",
            "opts": self.model._meta,
            "mirror": mirror,
            "policy": policy,
            "change": change,
            "entering": change["entering_packages"][:PREVIEW_SHOWN],
            "leaving": change["leaving_packages"][:PREVIEW_SHOWN],
            "shown": PREVIEW_SHOWN,
            "reasons": sorted(change["excluded_by_reason"].items(), key=lambda i: -i[1]),
        }
        return TemplateResponse(request, "admin/mirrors_app/mirror/policy_preview.html", context)


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "mirror",
        "state",
        "trigger",
        "created_at",
        "started_at",
        "finished_at",
        "seen",
        "filtered",
        "ingested",
        "downloaded",
        "failed",
    ]
    list_filter = ["state", "trigger"]
    search_fields = ["mirror__name"]
    list_select_related = ["mirror"]
    show_full_result_count = False

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        return not refers_to_secret(lookup) and super().lookup_allowed(lookup, value, request)

    def get_queryset(self, request):
        # Only runs of the mirrors the user may see.
        return filter_allowed(request.user, "view", super().get_queryset(request))

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
