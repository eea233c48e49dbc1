"""``bulkport gen`` on the command line: its help (with the flaw catalogue), arguments
and entry point."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from bulkport.gen.flaws import DEFAULT_MIX, FLAWS, build_mix
from bulkport.gen.run import (
    DEFAULT_ARTICLES,
    DEFAULT_COMMENTS,
    DEFAULT_GENERATED_USERS,
    DEFAULT_OUT_DIR,
    DEFAULT_USERS_FILE,
    GenConfig,
    generate,
)


def _catalogue() -> str:
    lines = []
    for resource, kinds in FLAWS.items():
        lines.append(f"{resource}:")
        for k in kinds[1:]:
            share = DEFAULT_MIX[resource].get(k.name, 0.0)
            codes = ", ".join(k.codes) or "accepted"
            lines.append(f"  {k.name:<26} {share:>6.2%}  -> {codes}: {k.doc}")
    return "\n".join(lines)


HELP = f"""\
Write users.csv, articles.ndjson and comments.ndjson with a known mix of flaws,
deterministic by --seed, and print the exact outcome of importing them (insert
mode, users -> articles -> comments, into a database without these records):
records, successful, rejected and the count of each error code. The same JSON
is written to OUT/expected.json.

Default: the companions of users_huge.csv: {DEFAULT_ARTICLES:,} articles and
{DEFAULT_COMMENTS:,} comments referring to users of --users-file that import, with
SPEC §7's mix of flaws. --users N generates N users instead (and the articles
and comments refer to them).

Flaw mix: each row is clean or carries one flaw kind. --flaw-rate R scales the
default mix so that a share R of the rows of each file is flawed (0 = clean
files; "flawed" includes kinds that are accepted, such as a missing id);
--flaw RESOURCE.KIND=SHARE then sets one kind's share (repeatable). Kinds,
default shares and the codes they yield:

{_catalogue()}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT_DIR,
                        help="output directory (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--users", type=int, default=None, metavar="N",
                        help="generate N users (default: refer to --users-file; "
                             f"{DEFAULT_GENERATED_USERS:,} users when that file is absent)")
    parser.add_argument("--users-file", type=Path, default=None, metavar="CSV",
                        help="users CSV the articles and comments refer to "
                             f"(default: {DEFAULT_USERS_FILE} when present)")
    parser.add_argument("--articles", type=int, default=DEFAULT_ARTICLES, metavar="N",
                        help="articles to generate (default: %(default)s)")
    parser.add_argument("--comments", type=int, default=DEFAULT_COMMENTS, metavar="N",
                        help="comments to generate (default: %(default)s)")
    parser.add_argument("--flaw-rate", type=float, default=None, metavar="R",
                        help="share of flawed rows in each file, spread like the default mix")
    parser.add_argument("--flaw", action="append", default=[], metavar="RESOURCE.KIND=SHARE",
                        help="set the share of one flaw kind, e.g. articles.invalid_slug=0.02")
    parser.add_argument("--list-flaws", action="store_true",
                        help="print the flaw kinds and their default shares, then exit")


def config_from_args(args: argparse.Namespace) -> GenConfig:
    users, users_file = args.users, args.users_file
    if users is not None and users_file is not None:
        raise ValueError("give either --users N or --users-file, not both")
    if users is None and users_file is None:
        if DEFAULT_USERS_FILE.exists():
            users_file = DEFAULT_USERS_FILE
        else:
            users = DEFAULT_GENERATED_USERS
    return GenConfig(out_dir=args.out, seed=args.seed, users=users, users_file=users_file,
                     articles=args.articles, comments=args.comments,
                     mix=build_mix(args.flaw_rate, args.flaw))


def main(args: argparse.Namespace) -> None:
    if args.list_flaws:
        print(_catalogue())
        return
    try:
        cfg = config_from_args(args)
        expected = generate(cfg)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"bulkport gen: {exc}") from None
    print(orjson.dumps(expected, option=orjson.OPT_INDENT_2).decode())
