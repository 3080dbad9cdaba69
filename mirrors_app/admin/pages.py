"""The mirror admin's own pages: confirm-then-POST commands (run, stop, restart), See
details with its CSV downloads, and the policy preview and apply pages."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from channels_app import verification

from .. import live, reports, services
from ..models import Mirror
from ..permissions import filter_allowed
from ..querysets import MirrorQuerySet
from .package_test import package_test_view

EXCLUDED_SHOWN = 1000  # on the details page; the CSV download has them all
WOULD_BLOCK_SHOWN = 100  # on the details page; the files list has them all
CHANGES_SHOWN = 20  # of each enforcement on the details page; the enforcements list has all
PREVIEW_SHOWN = 50  # entering and leaving packages listed on the policy preview page


def download(content: bytes | str, filename: str, content_type: str = "text/csv") -> HttpResponse:
    """A file for the browser to save as `filename`."""
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def for_admin(mirrors: MirrorQuerySet) -> MirrorQuerySet:
    """The mirrors with what the admin's columns and pages read, in the same queries."""
    return mirrors.with_related().with_run_warnings().with_active_runs()


class MirrorPages:
    """The per-mirror pages of `MirrorAdmin` (which supplies the permission checks)."""

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
        custom.append(
            path(
                "progress/",
                self.admin_site.admin_view(self.progress_view),
                name="mirrors_app_mirror_progress",
            )
        )
        custom.append(
            path(
                "test-package/",
                self.admin_site.admin_view(self.package_test_view),
                name="mirrors_app_test_package",
            )
        )
        return custom + super().get_urls()

    def package_test_view(self, request):
        """ "Test a package" for a channel (the page checks Read on the channel)."""
        return package_test_view(self, request)

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

    def _known_mirror(self, request, pk: int, *actions: str) -> Mirror:
        """The mirror, among those the user may see or do one of `actions` on: a mirror they
        may not (one of a private channel they may not read, say) is a 404, exactly like a
        missing one. The page then checks its own permission on it (a 403)."""
        mirrors = filter_allowed(request.user, ("view", "change", *actions), Mirror.objects.all())
        return get_object_or_404(for_admin(mirrors), pk=pk)

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

    def progress_view(self, request):
        """Live progress of the mirrors `?ids=1,2,3` (JSON): those the user may see; a 404
        when they may see none of them, as for mirrors that do not exist."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        raw = [part.strip() for part in request.GET.get("ids", "").split(",") if part.strip()]
        if not raw or len(raw) > live.MOST_IDS or not all(part.isdigit() for part in raw):
            return JsonResponse(
                {"detail": f"Give ?ids= as up to {live.MOST_IDS} mirror ids, comma separated."},
                status=400,
            )
        ids = {int(part) for part in raw}
        mirrors = filter_allowed(request.user, ("view", "change"), Mirror.objects.all())
        found = live.with_latest_runs(mirrors.filter(pk__in=ids).order_by("pk"))
        if not found:
            raise Http404("No such mirror.")
        return JsonResponse(live.progress_answer(found))  # admin_view: never cached

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
            "would_block": reports.mirror_files(mirror, "would_block")[:WOULD_BLOCK_SHOWN]
            if details["would_block"]
            else [],
            "enforcements": [
                (record, record.changes[:CHANGES_SHOWN], _unshown(record))
                for record in details["enforcements"]
            ],
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
            "live_status": live.status_cell(mirror, reverse("admin:mirrors_app_mirror_progress")),
        }
        return TemplateResponse(request, "admin/mirrors_app/mirror/details.html", context)

    def excluded_csv_view(self, request, pk: int):
        """Every package the policy keeps out, with the reason, as CSV."""
        mirror = self._mirror(request, pk)
        text = reports.as_csv(reports.excluded_packages(mirror), reports.EXCLUDED_COLUMNS)
        return download(text, reports.report_filename(mirror, "excluded"))

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
        return download(text, reports.report_filename(mirror, "dependency-report"))

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


def _unshown(record) -> int:
    """How many changes of an enforcement its row on the details page does not list."""
    return max(0, record.left + record.entered + record.would_leave - CHANGES_SHOWN)
