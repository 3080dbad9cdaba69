"""API permissions: the same Django permissions the admin checks."""

from __future__ import annotations

from rest_framework.permissions import DjangoModelPermissions


class ModelPermissions(DjangoModelPermissions):
    """DjangoModelPermissions that also require the `view` permission to read."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }


def require(*perms: str) -> type[ModelPermissions]:
    """Permission class for a command action: the model permission plus `perms`."""

    class Required(ModelPermissions):
        def has_permission(self, request, view) -> bool:
            return bool(request.user and request.user.is_authenticated) and request.user.has_perms(
                perms
            )

    Required.__name__ = "Require_" + "_".join(p.split(".")[-1] for p in perms)
    return Required
