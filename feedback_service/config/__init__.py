"""Settings: the one place a FEEDBACK_* variable is read.

The model (`Settings`, config/settings.py) declares each setting; the types it
uses and what they accept are in config/types.py; config/fields.py and
config/shown.py say how a setting is named, described and shown (secrets
masked, bad values in one line); config/environment.py reads the variables.
The handbook's configuration page is generated from these declarations
(scripts/docs-reference), so a new setting documents itself."""

from feedback_service.config.environment import TEST_VARIABLES
from feedback_service.config.fields import PREFIX, accepted, base_type, is_secret, markers, variable
from feedback_service.config.settings import (
    DEFAULT_LISTEN,
    JWT_SECRET_FILE,
    Settings,
    unknown_variables,
    variables,
)
from feedback_service.config.shown import SettingError, quoted, shown_value
from feedback_service.config.types import DATABASE_SCHEMES, address, parse_named_values, sqlite_url

__all__ = [
    "DATABASE_SCHEMES",
    "DEFAULT_LISTEN",
    "JWT_SECRET_FILE",
    "PREFIX",
    "TEST_VARIABLES",
    "SettingError",
    "Settings",
    "accepted",
    "address",
    "base_type",
    "is_secret",
    "markers",
    "parse_named_values",
    "quoted",
    "shown_value",
    "sqlite_url",
    "unknown_variables",
    "variable",
    "variables",
]
