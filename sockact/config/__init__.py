"""Settings: the one list of them (settings.py), and where their values come from (sources.py).

Every process reads a Config: the command line builds it, the supervisor keeps it, the workers are
forked with it. ``sockact.config`` is the way in; the modules behind it are split by job.
"""

from sockact.config.settings import (
    BY_NAME,
    DEFAULT_APP,
    ENV_PREFIX,
    LISTENER_KEYS,
    PACKAGED_CONFIG,
    SECTIONS,
    SETTINGS,
    Config,
    ListenerConfig,
    ListenerSettings,
    Setting,
)
from sockact.config.sources import (
    build,
    check_reload,
    check_virtualenv,
    describe,
    read_env,
    read_toml,
    toml_value,
    unapplied,
    warnings,
)

__all__ = ["BY_NAME", "DEFAULT_APP", "ENV_PREFIX", "LISTENER_KEYS", "PACKAGED_CONFIG", "SECTIONS", "SETTINGS", "Config",
           "ListenerConfig", "ListenerSettings", "Setting", "build", "check_reload", "check_virtualenv", "describe",
           "read_env", "read_toml", "toml_value", "unapplied", "warnings"]
