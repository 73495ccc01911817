"""Errors that reach the user as one line, never as a traceback."""


class UserError(Exception):
    """Bad input or an unusable environment: printed as one line, exit status 2."""

    exit_code = 2


class NotFound(UserError):
    """A container or object named on the command line does not exist: exit 1, as docker's."""

    exit_code = 1


class OperationFailed(UserError):
    """A command that could not do its job for a reason outside the user's input: exit 1."""

    exit_code = 1
