"""The user and group admins, with the rule of psm/escalation.py in place of Django's trust.

Django's stock admins let anyone with `auth.change_user` edit every field of every account. Here
a non-superuser changes only the accounts `may_manage_user` allows, never superuser or staff
status, offers only the groups and permissions it may give, never edits its own account, sets
passwords only where `may_set_password` allows; and changes only the groups it may give.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied

from .escalation import (
    givable_groups,
    givable_permissions,
    may_change_group,
    may_manage_user,
    may_set_password,
)

User = get_user_model()
SUPERUSER_ONLY_FIELDS = ("is_superuser", "is_staff")

admin.site.unregister(User)
admin.site.unregister(Group)


def _limit_choices(request, db_field, kwargs: dict) -> None:
    """Offer (and accept) only the groups and permissions the user may give."""
    if request.user.is_superuser:
        return
    if db_field.name == "groups":
        kwargs["queryset"] = givable_groups(request.user)
    elif db_field.name in ("user_permissions", "permissions"):
        kwargs["queryset"] = givable_permissions(request.user)


@admin.register(User)
class PSMUserAdmin(UserAdmin):
    def has_change_permission(self, request, obj=None) -> bool:
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or may_manage_user(request.user, obj))

    def has_delete_permission(self, request, obj=None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or may_manage_user(request.user, obj))

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            fields += [f for f in SUPERUSER_ONLY_FIELDS if f not in fields]
        return fields

    def formfield_for_manytomany(self, db_field, request=None, **kwargs):
        _limit_choices(request, db_field, kwargs)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def user_change_password(self, request, id, form_url=""):
        target = self.get_object(request, unquote(id))
        if target is not None and not may_set_password(request.user, target):
            raise PermissionDenied
        return super().user_change_password(request, id, form_url)


@admin.register(Group)
class PSMGroupAdmin(GroupAdmin):
    def has_change_permission(self, request, obj=None) -> bool:
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or may_change_group(request.user, obj))

    def has_delete_permission(self, request, obj=None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or may_change_group(request.user, obj))

    def formfield_for_manytomany(self, db_field, request=None, **kwargs):
        _limit_choices(request, db_field, kwargs)
        return super().formfield_for_manytomany(db_field, request, **kwargs)
