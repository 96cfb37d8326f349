"""Errors a user can act on: each prints as one line, without a traceback."""


class LiveroomError(Exception):
    """Base class; ``str(err)`` is the whole message shown to the user."""


class InputError(LiveroomError):
    """A bad input file or argument, named with the file, line and column at fault."""
