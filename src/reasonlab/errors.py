"""The exceptions the CLI turns into one-line messages: bad input (exit 2), a failed write and
unfinished work (exit 1)."""


class UserError(Exception):
    """Bad input from the user: a config key, a path, a checkpoint, a prompt.

    Raised before anything on disk is changed, so the CLI can print the message and exit 2.
    """


class WriteFailed(Exception):
    """A file or folder could not be written (disk full, read-only folder): names the path and the cause.

    Writes are atomic, so what was written before it (earlier checkpoints) is intact.
    """


class Incomplete(Exception):
    """Work that finished in part: what was done is reported, and the message names what is missing."""
