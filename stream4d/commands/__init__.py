"""CLI subcommands: each module here defines ``add_parser(subparsers)`` and ``run(args) -> int``.

The CLI discovers them, so a new subcommand is a new module and nothing else.
"""
