"""One exception type for bad user input: the CLI prints its message on one line and exits with code 2."""


class DistillError(Exception):
    """A user-facing error: the message names what is wrong and where (file, row, field)."""
