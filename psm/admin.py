from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Prefetch
from django.template.response import TemplateResponse
from django.utils.cache import patch_cache_control
from django.utils.translation import ngettext

from channels_app.models import Channel
from channels_app.permissions import known_channels, visible_channels

from . import tokens, user_admin  # noqa: F401 - registers the user and group admins
from .models import ApiToken, AuditEvent, OidcIdentity, TokenResource
from .roles import parse_grant


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read only: who froze, ran, stopped, restarted, deleted, changed a policy, and when."""

    list_display = ["created_at", "actor_name", "action", "target_type", "target_name", "details"]
    list_filter = ["action", "target_type", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["actor_name", "target_name", "action"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ApiTokenForm(forms.ModelForm):
    """Made per request by `ApiTokenAdmin.get_form` (`user`): only the channels that user may
    read are offered, so the form names no private channel they may not see."""

    user = None
    scopes = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 40}),
        help_text="Scope tokens: one 'category:level' per line, e.g. channel:read, "
        "channel.mirror:write, policy:manage.",
    )
    channels = forms.ModelMultipleChoiceField(
        queryset=Channel.objects.none(),
        required=False,
        help_text="Resource tokens: the channels (or subchannels) package clients may read.",
    )
    level = forms.ChoiceField(choices=TokenResource.Level.choices, initial="read")

    class Meta:
        model = ApiToken
        fields = ["name", "description", "kind", "expires_at"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "channels" in self.fields:
            channels = Channel.objects.select_related("parent")
            self.fields["channels"].queryset = visible_channels(self.user, channels)

    def clean_scopes(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["scopes"].splitlines()]
        scopes = [line for line in lines if line]
        for scope in scopes:
            try:
                parse_grant(scope)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return scopes

    def clean(self):
        data = super().clean()
        resources = [(c, data.get("level")) for c in data.get("channels") or []]
        try:
            tokens.token_check(
                kind=data.get("kind"), scopes=data.get("scopes") or [], resources=resources
            )
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Every staff user manages their own tokens; superusers see everyone's."""

    form = ApiTokenForm
    list_display = ["name", "hint", "user", "kind", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["kind", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "hint", "user__username"]
    list_select_related = ["user"]
    actions = ["revoke"]

    def get_queryset(self, request):
        found = super().get_queryset(request)
        # Channels a token still names but the viewer may not read are not shown.
        resources = TokenResource.objects.filter(
            known_channels(request.user, "channel")
        ).select_related("channel__parent")
        found = found.prefetch_related(Prefetch("resources", queryset=resources))
        return found if request.user.is_superuser else found.filter(user=request.user)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "description", "kind", "expires_at", "scopes", "channels", "level"]
        return ["name", "hint", "user", "kind", "scopes", "grants", "expires_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.get_fields(request, obj)

    @admin.display(description="Channels")
    def grants(self, token: ApiToken) -> str:
        return ", ".join(str(r) for r in token.resources.all())

    def save_model(self, request, obj, form, change) -> None:
        obj.user = request.user
        obj.scopes = form.cleaned_data["scopes"]
        level = form.cleaned_data["level"]
        resources = [(c, level) for c in form.cleaned_data["channels"]]
        # Kept on this object for response_add only: never in a message (a cookie or the session).
        obj.secret = tokens.token_issue(token=obj, resources=resources)

    def response_add(self, request, obj, post_url_continue=None):
        """Show the new secret once, on this response, instead of redirecting with a message."""
        context = {
            **self.admin_site.each_context(request),
            "title": f"Token {obj.name} created",
            "opts": self.opts,
            "token": obj,
            "secret": obj.secret,
        }
        response = TemplateResponse(request, "admin/psm/apitoken/created.html", context)
        patch_cache_control(response, no_store=True)
        return response

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # a token is revoked and replaced, never edited

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_revoke_permission(self, request) -> bool:
        return self.has_module_permission(request)

    @admin.action(permissions=["revoke"], description="Revoke selected tokens")
    def revoke(self, request, queryset) -> None:
        done = sum(tokens.token_revoke(token=t, user=request.user) for t in queryset)
        self.message_user(request, ngettext("%d token revoked.", "%d tokens revoked.", done) % done)


@admin.register(OidcIdentity)
class OidcIdentityAdmin(admin.ModelAdmin):
    """Single sign-on accounts: the subject they are matched on and their roles at last login."""

    list_display = ["user", "subject", "role_list", "last_login_at"]
    search_fields = ["user__username", "subject"]
    list_select_related = ["user"]
    readonly_fields = ["user", "subject", "roles", "last_login_at"]

    @admin.display(description="Roles and groups")
    def role_list(self, identity: OidcIdentity) -> str:
        return ", ".join(identity.roles)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("auth.view_user")
