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


class ApiError(Exception):
    """Refuse a client's request with a machine-readable ``code`` and a human ``message``.

    Raised by the handlers plugins contribute (REST endpoints through
    ``kefu_rest_endpoints``, frame ops through ``kefu_transport_frame_handlers``):
    over HTTP it becomes ``status`` with ``{"error": {"code", "message"}}``, over the
    gateway an ``error`` frame with the same code, ``message`` and ``extra`` fields
    (``field`` names a bad field). Nothing else is affected.
    """

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra
