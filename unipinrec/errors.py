"""The mistakes a user can make in what they give a run (data, config, paths), apart from bugs.

`UserInputError` is their base: a launcher reports one as a single line on stderr with exit
status 2 and no traceback (experiments/cli.py). Each also derives from the built-in error a
caller would catch (ValueError, FileNotFoundError). Besides the classes here, the data readers'
`DataFormatError` (unipinrec/data/interactions.py) and the index's `IndexMismatchError`
(unipinrec/index/manifest.py) are user errors.
"""


class UserInputError(Exception):
  """A mistake in what the user gave (data, config, paths, flags), reported in one line."""


class ConfigError(UserInputError, ValueError):
  """A config field or value the run cannot use, named by its path (`config.model: ...`)."""


class MissingPathError(UserInputError, FileNotFoundError):
  """A file or folder the user named (data, work directory, checkpoint) that is not there."""
