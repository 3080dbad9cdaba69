"""Policies: named rule sets deciding which packages may enter a channel."""

from __future__ import annotations

from django.db import models


class Policy(models.Model):
    """A reusable policy; applied to a channel or to one mirror, never both at once."""

    name = models.CharField(max_length=100, unique=True, help_text="A unique, descriptive name.")
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name
