"""Errors the kernel reports to the user as one line, without a traceback."""


class KefuError(Exception):
    """An error with a message meant for the operator."""


class ConfigError(KefuError):
    """Invalid configuration: names the file, the key and what was expected."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file, self.key, self.message = file, key, message
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {message}")


class StartupError(KefuError):
    """The kernel cannot start; the message says which plugin and why."""
