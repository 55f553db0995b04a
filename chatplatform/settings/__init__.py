"""Settings profiles: `base` (shared), `local` (default, embedded services), `production`,
`test`. Choose one with DJANGO_SETTINGS_MODULE."""
