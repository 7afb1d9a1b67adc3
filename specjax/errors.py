"""The one error type users see.

Every problem a user can cause (a bad path, a corrupt file, a wrong vocabulary, a bad config) raises
`SpecjaxError` with a message that names the problem and the fix. The CLI prints it without a traceback
and exits with status 2.
"""


class SpecjaxError(Exception):
  """A user-facing error: the message says what is wrong and how to fix it."""
