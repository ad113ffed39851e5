"""The kefu kernel: app factory, plugin manager, config, hook helpers, domain types, CLI.

The kernel knows no feature; every feature is a plugin (``kefu.plugins``).
"""

__version__ = "0.1.0"
