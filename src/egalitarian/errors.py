"""Exceptions shared by the whole package."""


class ConfigError(ValueError):
    """Bad user input: message names the field, the value and what is allowed."""
