"""The one exception type for bad user input.

A :class:`UserError` is printed by the CLI as one line (no traceback unless ``--debug``) and
ends the program with a non-zero exit code. Its message says what is wrong and how to fix it.
"""


class UserError(Exception):
    """Bad input from the user: configuration, files, command-line arguments."""

    exit_code = 2
