"""Where settings come from: the FEEDBACK_* variables of an environment, and
the warning for a FEEDBACK_* variable that no setting reads."""

import difflib
from collections.abc import Mapping

from pydantic_settings import BaseSettings, EnvSettingsSource

from feedback_service.config.fields import PREFIX, markers, variable
from feedback_service.config.types import EmptyIsAValue

# Read by the test suite (tests/), never by the service: not unknown settings.
TEST_VARIABLES = frozenset(
    {"FEEDBACK_TEST_POSTGRES_URL", "FEEDBACK_TEST_MYSQL_URL", "FEEDBACK_REQUIRE_BACKENDS"}
)


class EnvironmentSource(EnvSettingsSource):
    """The FEEDBACK_* variables of a mapping (os.environ by default). A blank
    value counts as unset, except where the setting gives it a meaning."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls, case_sensitive=False)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        keep_empty = {
            variable(name, field)
            for name, field in self.settings_cls.model_fields.items()
            if any(isinstance(m, EmptyIsAValue) for m in markers(field))
        }
        return {
            key.lower(): value.strip()
            for key, value in self._env.items()
            if key.startswith(PREFIX) and (value.strip() or key in keep_empty)
        }


def variables_of(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """Each setting's variable -> its field name."""
    return {variable(name, field): name for name, field in settings_cls.model_fields.items()}


def unknown_variables_of(settings_cls: type[BaseSettings], env: Mapping[str, str]) -> list[str]:
    """`FEEDBACK_X (did you mean FEEDBACK_Y?)` for each FEEDBACK_* variable no
    setting reads: most likely a typo, which would otherwise go unnoticed."""
    known = variables_of(settings_cls)
    unknown = []
    for key in sorted(env):
        if key.startswith(PREFIX) and key not in known and key not in TEST_VARIABLES:
            names = {name.removeprefix(PREFIX): name for name in known}
            close = difflib.get_close_matches(key.removeprefix(PREFIX), names, n=1)
            unknown.append(f"{key} (did you mean {names[close[0]]}?)" if close else key)
    return unknown
