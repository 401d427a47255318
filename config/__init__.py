"""Configuration: one `Settings` object read from `MEDIAMILL_*` environment variables."""

from mediamill.config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
