"""The one exception type the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a config key, a path, a checkpoint, a prompt.

    Raised before anything on disk is changed, so the CLI can print the message and exit 2.
    """
