"""Errors that are the user's to fix.

Anything raised as :class:`UserInputError` is reported by the command line as a single line
``genbound: error: <message>`` with exit code 2 and no traceback.
"""


class UserInputError(ValueError):
    """Bad input from the user (file, array, option, config value); the message says how to fix it."""
