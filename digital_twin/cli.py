"""The one rule for user mistakes on clustergym's command lines, shared by every entry point.

A user mistake (a flag out of range, a missing or malformed input file, an output path that cannot
be written) ends in **one line** on stderr, ``error: <what> <is wrong>; <what is allowed>``, and exit
status 2, with no traceback; ``--debug`` shows the traceback too. Everything else (a bug) keeps its
traceback. Output paths are checked *before* the work, and nothing is created until there is
something to write, so a refused run leaves no empty output folder behind.

Pieces:

* :class:`UsageError`: raise it (or one of the entry point's own ``user_errors``) for a user mistake;
* :class:`ConfigError`: a mistake inside a config (file or mapping): a ``UsageError`` on a command
  line, a ``ValueError`` for library callers (env factories, ``gym.make``);
* :func:`did_you_mean`, :func:`check_keys`, :func:`unknown_key`: the one wording of an unknown name
  or key (the allowed ones, and the closest as a suggestion), for flags and config keys alike;
* :class:`ArgumentParser`: ``argparse`` whose own errors (unknown flag, bad choice, a type check
  below) follow the same one-line rule; :class:`HelpFormatter` shows each default once;
* argparse types: :func:`positive_int`, :func:`non_negative_int`, :func:`positive_float`,
  :func:`non_negative_float`, :func:`fraction`, :func:`unit_interval`, :func:`existing_file`;
* output checks: :func:`check_writable_file`, :func:`check_writable_dir`;
* :func:`read_yaml`: a YAML file, or a one-line :class:`UsageError` naming file, line and column;
* :func:`run_cli`: runs a parsed command under the rule.

Example::

    def main(argv=None) -> int:
        parser = ArgumentParser(prog="python -m mypkg")
        parser.add_argument("--hosts", type=positive_int, default=10)
        add_debug_flag(parser)
        args = parser.parse_args(argv)
        return run_cli(lambda: work(args), debug=args.debug, user_errors=(MyConfigError,))
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

USAGE_ERROR = 2
"""Exit status of a user mistake (argparse's own)."""

INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT)."""


class UsageError(Exception):
    """A user mistake: the message is the whole explanation (one line: what, what is wrong, what is allowed)."""


class ConfigError(UsageError, ValueError):
    """A mistake in a config (an unknown key, a value of the wrong type or range, a missing file it names).

    A ``ValueError`` too, so that library callers (``make_vm_env``, ``gym.make``, ``load_config``)
    catch it as they catch any bad argument, while the command lines show it as one ``error:`` line.
    """


def one_line(message: object) -> str:
    """``message`` on one line: lines joined with ``"; "``, runs of blanks collapsed."""
    parts = [" ".join(line.split()) for line in str(message).splitlines()]
    return "; ".join(p for p in parts if p)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key(where: str, key: object, allowed: Iterable[str], prefix: str = "", section: str | None = None
                ) -> ConfigError:
    """The error for an unknown config key: ``"<where>: unknown key 'a.b' (did you mean 'x'?); allowed under a: ..."``.

    Args:
        where: the file (or ``"<dict>"``, an override, ...) the key came from.
        key: the key as written.
        allowed: the keys allowed at that place.
        prefix: the dotted path of the enclosing section (``"env."``), shown before the key.
        section: how to name that section in "allowed under ..." (default: ``prefix`` without its dot).
    """
    allowed = sorted(str(a) for a in allowed)
    section = prefix.rstrip(".") if section is None else section
    return ConfigError(f"{where}: unknown key '{prefix}{key}'{did_you_mean(str(key), allowed)}; "
                       f"allowed{' under ' + section if section else ''}: {', '.join(allowed)}")


def check_keys(where: str, given: Any, allowed: Iterable[str], prefix: str = "", section: str | None = None) -> None:
    """Refuse the first key of ``given`` (a mapping) not in ``allowed``, with :func:`unknown_key`'s message.

    Raises:
        ConfigError: ``given`` is not a mapping, or has a key not in ``allowed``.
    """
    allowed = list(allowed)
    if not isinstance(given, dict):
        what = f"'{prefix.rstrip('.')}'" if prefix else "the document"
        raise ConfigError(f"{where}: {what} must be a mapping of {', '.join(sorted(map(str, allowed)))}; "
                          f"got {type(given).__name__} {one_line(repr(given))[:60]}")
    for key in given:
        if key not in allowed:
            raise unknown_key(where, key, allowed, prefix, section)


# ---------------------------------------------------------------------- argparse
class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` with each option's default shown once: appended as ``(default: X)`` unless the help
    text already says its default, or there is none worth saying (None, False, a suppressed one).

    ``ArgumentDefaultsHelpFormatter`` appends ``(default: None)`` after a help that already
    explains its default in words; the description and epilog keep their line breaks.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default is argparse.SUPPRESS:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        # The help text is %-formatted by argparse afterwards: the default's own % must be doubled.
        return f"{text} (default: {shown.replace('%', '%%')})"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one ``error: ...`` line and exit 2 (no usage block).

    Subcommand parsers made with ``add_subparsers().add_parser`` are of this class too.
    """

    def error(self, message: str):  # noqa: D102  (argparse's hook)
        if message.startswith("unrecognized arguments:"):
            words = message.split(":", 1)[1].split()
            flags = [w for w in words if w.startswith("-")]
            hint = did_you_mean(flags[0], self._all_option_strings()) if flags else ""
            message += hint or f" (see {self.prog} --help)"
        elif message.startswith("the following arguments are required") or "invalid choice" in message:
            message += f" (see {self.prog} --help)"
        self.exit(USAGE_ERROR, f"error: {self.prog}: {one_line(message)}\n")

    def _all_option_strings(self) -> list[str]:
        """Option strings of this parser and of its subcommands (an unknown flag is reported by the top parser)."""
        found: list[str] = []
        for action in self._actions:
            found += [o for o in action.option_strings if o.startswith("--")]
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
        return sorted(set(found))


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug`` (tracebacks of user errors too)."""
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error too")


def _number(text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], got {text}")
    return value


def unit_interval(text: str) -> float:
    """argparse type: a number in (0, 1] (a share that cannot be zero)."""
    value = _number(text, float)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (0 excluded), got {text}")
    return value


def existing_file(text: str) -> Path:
    """argparse type: a path to an existing, readable file."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable (permission denied)")
    return path


# ---------------------------------------------------------------------- output paths
def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _can_create_in(folder: Path) -> bool:
    """Whether a file can really be created in ``folder`` (a probe file, removed at once).

    ``os.access`` alone says yes to root everywhere, also on read-only or virtual file systems.
    """
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_writable_dir(path: str | Path, flag: str) -> Path:
    """Check that ``path`` is, or can be created as, a writable folder; creates nothing.

    Raises:
        UsageError: naming ``flag``, the path and why not.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {path}: exists and is not a folder; give a folder path")
        if not _can_create_in(path):
            raise UsageError(f"{flag} {path}: cannot write files in this folder")
        return path
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UsageError(f"{flag} {path}: {base} is a file, so the folder cannot be created")
    if not _can_create_in(base):
        raise UsageError(f"{flag} {path}: cannot create it, {base} is not writable")
    return path


def check_writable_file(path: str | Path, flag: str, suffixes: Sequence[str] | None = None,
                        create_parents: bool = True) -> Path:
    """Check that ``path`` can be written as a file (before the work that produces it); creates nothing.

    Args:
        path: the output file.
        flag: the flag that gave it, for the message.
        suffixes: allowed file name endings (``".png"``, ...), or None for any.
        create_parents: whether missing parent folders will be created at write time (else they must exist).

    Raises:
        UsageError: naming ``flag``, the path and why not.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file path")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        kind = repr(path.suffix) if path.suffix else "(no file name ending)"
        raise UsageError(f"{flag} {path}: unsupported file type {kind}; use one of {', '.join(suffixes)}")
    if path.exists():
        try:
            with open(path, "a"):  # appends nothing: the file stays as it is
                pass
        except OSError as err:
            raise UsageError(f"{flag} {path}: file not writable ({err.strerror or err})") from None
        return path
    parent = path.absolute().parent
    if not parent.exists() and not create_parents:
        raise UsageError(f"{flag} {path}: folder {path.parent} does not exist")
    base = _nearest_existing(parent)
    if not base.is_dir():
        raise UsageError(f"{flag} {path}: {base} is a file, not a folder")
    if not _can_create_in(base):
        raise UsageError(f"{flag} {path}: cannot write in {base}")
    return path


# ---------------------------------------------------------------------- input files
def read_yaml(path: str | Path, flag: str | None = None) -> Any:
    """Parse a YAML file; any problem is a one-line :class:`UsageError` (file, line, column, reason)."""
    import yaml

    path = Path(path)
    where = f"{flag} {path}" if flag else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{where}: is a folder, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{where}: cannot read it ({one_line(err)})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or one_line(err)
        raise UsageError(f"{where}: not valid YAML{at}: {problem}") from None


# ---------------------------------------------------------------------- running
def run_cli(command: Callable[[], int | None], *, debug: bool = False,
            user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``command`` under the rule: a :class:`UsageError` or one of ``user_errors`` -> one line, exit 2.

    Args:
        command: the parsed command; returns its exit status (None: 0).
        debug: print the traceback of a user error too.
        user_errors: the entry point's own exception classes that mean a user mistake (their
            messages name the file and the key, e.g. ``SnapshotError``, ``ScenarioError``).

    Returns:
        The exit status.
    """
    try:
        status = command()
    except (UsageError, *user_errors) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    return 0 if status is None else int(status)


__all__ = [
    "ArgumentParser", "ConfigError", "HelpFormatter", "INTERRUPTED", "USAGE_ERROR", "UsageError", "add_debug_flag",
    "check_keys", "check_writable_dir", "check_writable_file", "did_you_mean", "existing_file", "fraction",
    "non_negative_float", "non_negative_int", "one_line", "positive_float", "positive_int", "read_yaml", "run_cli",
    "unit_interval", "unknown_key",
]
