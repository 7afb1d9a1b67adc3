"""The `specjax` command line. Subcommands are thin: parse arguments, call the library.

Every subcommand registers itself with `specjax.cli.common.command`, in the module of its subject
(models, data, train, decode); heavy imports happen inside the handlers so that `specjax --help` stays
fast. A `SpecjaxError` is printed as one line without a traceback (exit 2).
"""

from __future__ import annotations

import argparse
import sys

from specjax.cli import data, decode, models, quality, train  # noqa: F401  (each registers its subcommands)
from specjax.cli.common import COMMANDS
from specjax.errors import SpecjaxError

SUBJECTS = ("models", "data", "train", "decode", "quality")  # the order of `specjax --help`: the job's order


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
  """The whole command line, or (`only`) one subcommand's arguments and the others' names: the decoding
  commands' flags come from the mode registry, which imports the decoders, so `specjax --help` and the
  other subcommands do not pay for it."""
  parser = argparse.ArgumentParser(prog="specjax", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, help, add_args, fn in sorted(COMMANDS, key=lambda c: SUBJECTS.index(c[3].__module__.rsplit(".", 1)[1])):
    p = sub.add_parser(name, help=help, description=help)
    if only is None or name == only:
      add_args(p)
    p.set_defaults(_handler=fn)
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  names = {name for name, *_ in COMMANDS}
  parser = build_parser(next((a for a in argv if a in names), ""))
  args, extra = parser.parse_known_args(argv)
  if extra:  # key=value overrides may sit anywhere on the line, e.g. after --steps N
    if not hasattr(args, "overrides") or any(not x.partition("=")[1] or x.startswith("-") for x in extra):
      parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = list(args.overrides) + extra
  try:
    return int(args._handler(args) or 0)
  except SpecjaxError as e:
    print(f"specjax {args.command}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"specjax {args.command}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  raise SystemExit(main())
