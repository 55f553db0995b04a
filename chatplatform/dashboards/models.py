"""Who may read which site's dashboard.

Superusers read every site. Any other staff user reads only the sites granted to them here;
a staff user with no grant sees no data (access is granted, never assumed). Non-staff users
never reach the dashboard.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from chatplatform.tenants.models import Site


class SiteAccess(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dashboard_sites"
    )
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="dashboard_access")

    class Meta:
        verbose_name = "dashboard access"
        verbose_name_plural = "dashboard access"
        constraints = [
            models.UniqueConstraint(fields=["user", "site"], name="unique_dashboard_access")
        ]

    def __str__(self) -> str:
        return f"{self.user} -> {self.site}"
