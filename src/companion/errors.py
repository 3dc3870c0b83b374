"""The one exception type a user can cause: the CLI prints it as one line and exits with code 2."""


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the way out."""
