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


class DailySourceRollup(models.Model):
    """Message counts and sums of one site, UTC day, role and answer source: exactly what the
    dashboard's grouped query returns for that day, kept so settled days are not re-scanned.
    Written by rollups.py only; the per-message records stay the source of truth."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    role = models.CharField(max_length=16)
    source = models.CharField(max_length=16, blank=True)
    n = models.PositiveIntegerField()
    sla_checked = models.PositiveIntegerField()
    sla_met = models.PositiveIntegerField()
    thumbs_up = models.PositiveIntegerField()
    thumbs_down = models.PositiveIntegerField()
    gpu_answers = models.PositiveIntegerField(default=0)  # answers with GPU time spent
    gpu_seconds = models.FloatField()
    prompt_tokens = models.BigIntegerField()
    completion_tokens = models.BigIntegerField()
    # Every answer's latency, sorted, as little-endian float64 (rollups.pack_values): exact
    # percentiles of any range need all values, and reading these blobs is ~20x faster than
    # reading one database row per answer. Empty for customer messages.
    ttft_values = models.BinaryField(default=b"")
    total_values = models.BinaryField(default=b"")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["site", "day", "role", "source"], name="unique_daily_source_rollup"
            )
        ]

    def __str__(self) -> str:
        return f"{self.site_id} {self.day} {self.role}/{self.source}: {self.n}"


class DailySiteRollup(models.Model):
    """Per site and UTC day: conversations, handoff requests and missed questions. Its
    existence also marks the day as rolled up (a quiet day has this row with zeros and no
    DailySourceRollup rows)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    conversations = models.PositiveIntegerField()
    handoffs = models.PositiveIntegerField()
    missed_questions = models.PositiveIntegerField()
    # Customer questions whose first answer text came within the SLA (queries.py: definitions).
    questions_sla_met = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site", "day"], name="unique_daily_site_rollup")
        ]

    def __str__(self) -> str:
        return f"{self.site_id} {self.day}"
