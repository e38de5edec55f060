"""The exceptions the CLI turns into one-line messages: bad input (exit 2), a failed write and
unfinished work and a diverged run (exit 1), a run stopped by a signal (exit 128 + the signal's number)."""


class UserError(Exception):
    """Bad input from the user: a config key, a path, a checkpoint, a prompt.

    Raised before anything on disk is changed, so the CLI can print the message and exit 2.
    """


class WriteFailed(Exception):
    """A file or folder could not be written (disk full, read-only folder): names the path and the cause.

    Writes are atomic, so what was written before it (earlier checkpoints) is intact.
    """


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the checkpoints written before are left as they were."""


class Incomplete(Exception):
    """Work that finished in part: what was done is reported, and the message names what is missing."""


class Interrupted(Exception):
    """A run stopped on Ctrl-C or SIGTERM after checkpointing its current step; `exit_code` is the
    shell's convention for that signal (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
