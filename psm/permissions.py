"""The generic pieces of PSM's row permissions: the admin and API classes that check a row
with its model's rules, whatever the model.

Django permissions are per model, but PSM's categories are not: a subchannel is a Channel row
with a parent (category Subchannels) and a subchannel's mirror is a Mirror whose channel has a
parent (category Subchannel mirrors). So each action maps to two permissions, and the row
decides which one applies. The rules live beside their models (channels_app.permissions,
mirrors_app.permissions), which register them here; this module knows no app.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.db.models import Model, QuerySet
from rest_framework.permissions import BasePermission, DjangoModelPermissions


def signed_in(user) -> bool:
    """An active, signed-in user: the one test of every access path (inactive = no access)."""
    return bool(user and user.is_authenticated and user.is_active)


@dataclass(frozen=True)
class RowRules:
    """What the admin and API classes below ask about the rows of one model."""

    # (action, row) -> the Django permission the action on that row needs.
    perm_for: Callable[[str, Model], str]
    # (user, action, row) -> whether the user may; for `add`, the unsaved row.
    may: Callable[[Any, str, Model], bool]
    # (user, action, *, subchannel) -> whether the user may on some rows: in top-level channels
    # (subchannel=False), in subchannels (True) or in either (None).
    may_some: Callable[..., bool]
    # (user, action or actions, queryset) -> the rows the user may do one of them on.
    filter_allowed: Callable[[Any, str | tuple[str, ...], QuerySet], QuerySet]


_RULES: dict[str, RowRules] = {}


def register(model: type[Model], rules: RowRules) -> None:
    """Make `rules` the rules of `model`'s rows (called by the module defining them)."""
    _RULES[model._meta.label_lower] = rules


def rules_for(model: type[Model]) -> RowRules:
    """The registered rules of `model`'s rows."""
    return _RULES[model._meta.label_lower]


# --- REST API ---------------------------------------------------------------------------------


class ModelPermissions(DjangoModelPermissions):
    """DjangoModelPermissions that also require the `view` permission to read."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }


METHOD_ACTIONS = {
    "GET": "view",
    "HEAD": "view",
    "OPTIONS": "view",
    "POST": "add",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}


class RowPermissions(BasePermission):
    """The permission of the request's action for the rows it touches (the model's `may`).

    Used through `RowPermissionsMixin`. Creating is checked again in the view, on the new row
    (its channel is only known from the body)."""

    actions: tuple[str, ...] = ()  # empty: the HTTP method's

    def actions_for(self, request) -> tuple[str, ...]:
        return self.actions or (METHOD_ACTIONS.get(request.method, "change"),)

    def has_permission(self, request, view) -> bool:
        rules = rules_for(view.permission_model)
        return all(
            rules.may_some(request.user, action, subchannel=view.permission_subchannel)
            for action in self.actions_for(request)
        )

    def has_object_permission(self, request, view, obj) -> bool:
        rules = rules_for(view.permission_model)
        return all(rules.may(request.user, action, obj) for action in self.actions_for(request))


class RowPermissionsMixin:
    """For viewsets of rows with registered rules: `RowPermissions`, and `filter_rows` for
    `get_queryset`, so rows the user may neither see nor act on are 404s and not listed."""

    permission_classes = [RowPermissions]
    permission_model: type[Model]
    # Narrow the rows to top-level channels (False) or subchannels (True) and theirs.
    permission_subchannel: bool | None = None

    def filter_rows(self, queryset: QuerySet) -> QuerySet:
        actions = {"view"}.union(
            *(
                perm.actions_for(self.request)
                for perm in self.get_permissions()
                if isinstance(perm, RowPermissions)
            )
        )
        rules = rules_for(self.permission_model)
        return rules.filter_allowed(self.request.user, tuple(sorted(actions)), queryset)


def require(*actions: str) -> type[RowPermissions]:
    """Permission class for a command on one row that needs all of `actions` (`run`, …)."""
    return type(f"Require_{'_'.join(actions)}", (RowPermissions,), {"actions": actions})


# --- Admin ------------------------------------------------------------------------------------


class RowPermissionsAdmin:
    """ModelAdmin mixin: the model's permissions checked per row with its rules' `may`.

    Lists and pages only hold rows the user may see (view or change, as in Django); a custom
    action `x` is allowed by `has_x_permission`; bulk actions skip the rows not allowed; the
    add and change forms check the row as it will be saved, `permission_field` (the field that
    places it in a channel or subchannel) included."""

    permission_field: str = ""

    @property
    def rules(self) -> RowRules:
        return rules_for(self.model)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return self.rules.filter_allowed(request.user, ("view", "change"), queryset)

    def may(self, request, action: str, obj=None) -> bool:
        """`action` on this row, or, without a row, on some rows."""
        if obj is None:
            return self.rules.may_some(request.user, action)
        return self.rules.may(request.user, action, obj)

    def has_view_permission(self, request, obj=None) -> bool:
        return self.may(request, "view", obj) or self.may(request, "change", obj)

    def has_add_permission(self, request) -> bool:
        return self.may(request, "add")

    def has_change_permission(self, request, obj=None) -> bool:
        return self.may(request, "change", obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.may(request, "delete", obj)

    def permitted(self, request, action: str, queryset: QuerySet) -> QuerySet:
        """The selected rows `action` is allowed on; says how many were skipped."""
        allowed = self.rules.filter_allowed(request.user, action, queryset)
        skipped = queryset.count() - allowed.count()
        if skipped:
            self.message_user(
                request,
                f"{skipped} selected {self.model._meta.verbose_name_plural} skipped: "
                f"you may not {action} them.",
                messages.WARNING,
            )
        return allowed

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        field, user, rules = self.permission_field, request.user, self.rules

        class RowPermissionForm(form):
            def clean(self):
                data = super().clean()
                if not field or field in self.errors or field not in self.fields:
                    return data
                row = copy.copy(self.instance)
                setattr(row, field, data.get(field))
                action = "change" if row.pk else "add"
                if not rules.may(user, action, row):
                    perm = rules.perm_for(action, row)
                    self.add_error(field, f"You do not have the permission {perm} for this.")
                return data

        return RowPermissionForm
