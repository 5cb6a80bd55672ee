"""The launchers' entry point: a user's mistake is one line on stderr and exit status 2.

A `UserInputError` (unipinrec/errors.py) from the flags or from `main` prints
`error: <message>` with no traceback or usage text; any other exception is a
bug and keeps absl's behaviour (its traceback, a non-zero status).
"""

import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from absl import app, flags
from ml_collections.config_flags import config_flags

from unipinrec.errors import UserInputError

USER_ERROR_STATUS = 2  # as argparse's: the command was used wrongly


class CommandLineError(UserInputError, ValueError):
  """A flag that cannot be used: unknown, missing, or a value that does not parse."""


def run(main: Callable[[list[str]], Any]) -> None:
  """absl's `app.run(main)`, with a `UserInputError` reported as one line and status 2."""
  try:
    app.run(main, flags_parser=parse_flags)
  except UserInputError as error:
    fail(error)


def fail(error: UserInputError) -> NoReturn:
  """Prints `error: <message>` as one line on stderr and exits with status 2."""
  print(f"error: {' '.join(_lines(str(error)))}", file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_STATUS)


def define_config_file(name: str, default: str, help_text: str) -> flags.FlagHolder:
  """`config_flags.DEFINE_config_file`, an override of no config field failing as in `run`.

  Without --NAME on the command line, ml_collections applies the overrides to the default
  config here, when the launcher's module is imported, before `run` parses anything.
  """
  try:
    return config_flags.DEFINE_config_file(name, default, help_text)
  except (KeyError, AttributeError) as error:
    message = _unknown_config_field(error, sys.argv)
    if message is None:
      raise
    fail(CommandLineError(message))


def parse_flags(argv: Sequence[str]) -> list[str]:
  """Parses the command line into absl's FLAGS, its mistakes raised as `CommandLineError`."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as error:
    # ml_collections puts the traceback of a failed get_config() in the message: keep its last line.
    lines = _lines(str(error))
    raise CommandLineError(" ".join(lines[:1] + lines[1:][-1:])) from error
  except (KeyError, AttributeError) as error:
    message = _unknown_config_field(error, argv)
    if message is None:
      raise
    raise CommandLineError(message) from error
  _check_config_files()
  return remaining


def _lines(text: str) -> list[str]:
  return [line.strip() for line in text.splitlines() if line.strip()]


def _unknown_config_field(error: Exception, argv: Sequence[str]) -> str | None:
  """`flag --config.a.b=1: the config has no field 'b'` for ml_collections' error on an override.

  None when no `--config.*` override names the missing key: then the error is not the user's.
  """
  detail = error
  while isinstance(detail, BaseException) and detail.args:  # AttributeError(KeyError(text))
    detail = detail.args[0]
  first, *hint = _lines(str(detail)) or [""]
  key = first.strip("'\"")
  for arg in argv[1:]:
    match = re.fullmatch(r"--?(\w+(?:\.\w+)+)(=.*)?", arg)
    if match and key in match.group(1).split(".")[1:]:
      return " ".join([f"flag {arg}: the config has no field {key!r}.", *hint])
  return None


def _check_config_files() -> None:
  """Raises `CommandLineError` for a config flag whose file could not be loaded.

  ml_collections defers that error (an OSError) to the first use of the config.
  """
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if config_flags.is_config_flag(flag):
      try:
        flag.value.to_dict()
      except OSError as error:
        path = config_flags.get_config_filename(flag)
        raise CommandLineError(f"flag --{name}={path}: {_lines(str(error))[-1]}") from error
