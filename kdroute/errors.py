"""The domain exceptions. Each carries the exit code the CLI uses; the gateway maps them to
OpenAI-shaped HTTP errors. Messages are one line and say what to fix."""


class KdrouteError(Exception):
    """Base of every error kdroute raises on purpose."""

    exit_code = 1


class ConfigError(KdrouteError):
    """The configuration file or an environment override is invalid."""

    exit_code = 2


class InputError(KdrouteError):
    """A path, file, task or flag given by the user cannot be used."""

    exit_code = 2


class StoreError(KdrouteError):
    """The ledger cannot be opened or written."""

    exit_code = 1


class BackendError(KdrouteError):
    """A model backend failed or could not be reached."""

    exit_code = 2


class NotBuiltError(KdrouteError):
    """A stage of the pipeline that this version does not have yet."""

    exit_code = 1


class GateFailed(KdrouteError):
    """A release gate (bench retention) was not met."""

    exit_code = 1
