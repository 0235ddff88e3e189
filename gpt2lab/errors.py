"""The one exception type that means "the user asked for something we cannot do".

The CLI prints its message on one line and exits 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    pass
