"""The API's access rule; its settings are declared with the others in ``..settings``."""

from ..settings import ApiSettings, ConfigurationError, Settings, key_digest

__all__ = ["ApiSettings", "check_access_rules", "key_digest"]


def check_access_rules(settings: Settings, api: ApiSettings) -> None:
    """The production profile never serves without keys unless the operator said it is public."""
    if settings.production and not api.auth_required and not api.public:
        raise ConfigurationError(
            "the production profile needs API keys: set IMGSEARCH_API_KEYS (comma-separated), "
            "or IMGSEARCH_API_PUBLIC=true to serve every indexed image to anyone")
