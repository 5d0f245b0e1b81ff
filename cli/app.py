"""The `svlora` command: one subcommand per stage, each defined in its own module of this
package (the entry layer above the stages). Errors print one line and exit 1."""

from __future__ import annotations

import argparse
import errno
import logging
import sys

from svlora.cli import (batching, data, evaluation, postprocessing, quickstart, reviewing,
                        selecting, serving, training)
from svlora.errors import SvloraError

FILE_ERRNOS = {errno.ENOSPC: "free some space and run again (training: --resume)",
               errno.EDQUOT: "free some space and run again (training: --resume)",
               errno.EROFS: "choose a writable output directory",
               errno.EACCES: "check the permissions or choose another directory",
               errno.ENOTDIR: "a file stands where a directory is needed; choose another path"}

COMMAND_MODULES = (data, training, evaluation, serving, batching, postprocessing, reviewing, selecting,
                   quickstart)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svlora", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


class StderrNotes(logging.Handler):
    """The "svlora" logger's notes (model loading, hub fallbacks) as "svlora: MESSAGE" on the
    current sys.stderr (looked up per record, so a redirected stderr is honoured)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"svlora: {record.getMessage()}", file=sys.stderr, flush=True)


def show_notes() -> None:
    logger = logging.getLogger("svlora")
    if not any(isinstance(h, StderrNotes) for h in logger.handlers):
        logger.addHandler(StderrNotes())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    show_notes()
    parser = build_parser()
    # Recipe overrides may follow flags (`train R --print-config a.b=1`), which argparse's
    # positional nargs cannot take once a flag intervenes.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train" or not all("=" in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    try:
        code = args.handler(args)
    except SvloraError as error:
        print(f"svlora {args.command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # disk full, read-only or missing folder, permissions
        if error.errno not in FILE_ERRNOS:
            raise
        where = error.filename or "a file"
        print(f"svlora {args.command}: error: {where}: {error.strerror}; "
              f"{FILE_ERRNOS[error.errno]}", file=sys.stderr)
        return 1
    return code or 0
