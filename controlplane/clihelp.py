"""Help for `berth` commands: every command lists its subcommands with a one-line
description and an example, the way `git` and `kamal` do.

`command_parser(prog, description, commands)` builds an argparse parser whose subcommands
are `commands` (each a `Command`: name, one-line summary, example). `--help` on it prints
the list with examples; `--help` on a subcommand prints its summary and example; calling
it without a subcommand prints the help and exits 2.
"""

import argparse
import sys
from dataclasses import dataclass
from typing import NoReturn


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    example: str


def commands_text(commands: tuple[Command, ...], title: str = "commands") -> str:
    width = max(len(c.name) for c in commands) + 2
    lines = [f"{title}:"]
    for c in commands:
        lines.append(f"  {c.name:<{width}}{c.summary}")
        lines.append(f"  {'':<{width}}  e.g. {c.example}")
    return "\n".join(lines)


class HelpParser(argparse.ArgumentParser):
    """Without a subcommand: the full help on stderr and exit 2 (not just one usage line)."""

    def error(self, message: str) -> NoReturn:
        if message.endswith("required: COMMAND"):
            self.print_help(sys.stderr)
            self.exit(2)
        super().error(message)


def add_commands(
    parser: argparse.ArgumentParser, commands: tuple[Command, ...], dest: str = "command"
) -> dict[str, argparse.ArgumentParser]:
    """Give `parser` the subcommands `commands`; its help lists them with examples."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        commands_text(commands) + f"\n\nRun '{parser.prog} COMMAND --help' for its options."
    )
    sub = parser.add_subparsers(dest=dest, required=True, metavar="COMMAND",
                                help="one of the commands below", parser_class=HelpParser)  # fmt: skip
    parsers: dict[str, argparse.ArgumentParser] = {}
    for c in commands:
        parsers[c.name] = sub.add_parser(
            c.name,
            description=c.summary[:1].upper() + c.summary[1:] + ".",
            epilog=f"example:\n  {c.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    return parsers


def command_parser(
    prog: str, description: str, commands: tuple[Command, ...]
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = HelpParser(prog=prog, description=description)
    return parser, add_commands(parser, commands)
