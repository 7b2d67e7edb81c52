"""The one exception type for errors a user can cause and fix.

Contract: the message is a single line that says what was wrong and how to fix it. The CLI
prints it without a traceback and exits 2; the flow ends Failed with it as the state message.
Never put a secret value into one: name the block, the variable or the field instead.
"""


class UserError(ValueError):
    """A problem the user can fix; str(error) is one line."""
