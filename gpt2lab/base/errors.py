"""Errors the command line reports as one clear line instead of a traceback.

Anything else is a bug and keeps its traceback.
"""


def one_line(text: object) -> str:
    """A message collapsed to one line: some library errors we pass on span several."""
    return " ".join(str(text).split())


class GPT2LabError(Exception):
    exit_code = 1


class UserError(GPT2LabError):
    """The user asked for something we cannot do: a bad path, a bad number, missing data."""

    exit_code = 2


class TrainingDiverged(GPT2LabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3


class RunStopped(GPT2LabError):
    """A run stopped early at a step boundary (a signal, a data error, a checkpoint that could not be
    written); the message says which checkpoint holds the work and the command that resumes it."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
