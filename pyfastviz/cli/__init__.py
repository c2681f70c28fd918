"""The `pyfastviz` command line: `demo` builds the gallery; `saliency` and `occlusion` explain
your images and `sweep` maps every image of a folder (resumable, sharded; under torchrun one
process per GPU); `classvis`, `fool`, `invert` and `dream` make images by gradient ascent;
`texture` and `style` match Gram statistics, `train-style` and `stylize` train and run fast
(feed-forward) style networks; `layers`, `filters`, `activations`, `embed` and `neighbours`
look inside the model. One module per family of commands, each adding its subcommands.

Errors users can fix (a missing or unreadable image, an unknown class or model) print one
line `pyfastviz: error: ...` to stderr and exit with status 2; Ctrl-C prints
`pyfastviz: interrupted` and exits with status 130.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings

from pyfastviz import __version__
from pyfastviz.cli import ascent, explain, inspect, style
from pyfastviz.cli.common import device, device_option, model_options, output_folder, quiet_option
from pyfastviz.report import run_demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyfastviz", description="Visualizing and understanding CNNs in PyTorch.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="build the HTML gallery of every technique on sample photos",
                               description="Build the HTML gallery of every technique on sample photos.")
    demo.add_argument("--out", default="pyfastviz-demo", metavar="DIR", help="output folder (default: %(default)s)")
    demo.add_argument("--full", action="store_true", help="paper-quality settings (slower)")
    model_options(demo)
    device_option(demo)
    quiet_option(demo)
    demo.add_argument("--style-image", metavar="FILE", help="paint china in this image's style in the style "
                                                            "transfer section (default: the flower photo)")
    demo.set_defaults(run=_demo)
    for family in (explain, ascent, style, inspect):
        family.add_commands(commands)
    return parser


def _demo(args: argparse.Namespace) -> None:
    index = run_demo(output_folder(args.out), full=args.full, model_name=args.model, style_image=args.style_image,
                     weights_path=args.weights, progress=not args.quiet, device=device(args.device))
    print(f"Gallery written to {index}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line on `argv` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        args.run(args)
        sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C: what was written stays consistent (atomic files, resumable sweeps)
        print("pyfastviz: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`pyfastviz layers | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush stays quiet
        return 1
    except (OSError, ValueError) as err:
        print(f"pyfastviz: error: {in_flags(str(err), parser, args.command)}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatwarning
    return 0


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of each command, by name."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def in_flags(message: str, parser: argparse.ArgumentParser, command: str) -> str:
    """An error of the library as the command line says it: the keywords of the command's
    options (`steps=100`, a message's first word `style`) become their flags (`--steps 100`),
    and so do the keywords a command maps to a flag of another name (its `keyword_flags`
    default, e.g. sweep's samples -> --smoothgrad); a positional argument's `data=` becomes
    its metavar (`DATA `)."""
    sub = subcommands(parser)[command]
    flags = {action.dest: action.option_strings[-1] for action in sub._actions
             if action.option_strings and action.option_strings[-1].startswith("--")}
    flags.update(sub.get_default("keyword_flags") or {})
    for keyword, flag in flags.items():
        message = _keyword_as(keyword, flag, message)
        if message.startswith(f"{keyword} "):
            message = flag + message[len(keyword):]
    for action in sub._actions:
        if not action.option_strings and isinstance(action.metavar, str):
            message = _keyword_as(action.dest, action.metavar, message)
    return message


def _keyword_as(keyword: str, name: str, message: str) -> str:
    """`keyword=value` and `keyword= value` in message as `name value`."""
    return re.sub(rf"(?<![\w.-]){keyword}= ?", f"{name} ", message)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the command line shows it: `pyfastviz: warning: ...`, without the source line."""
    return f"pyfastviz: warning: {message}\n"
