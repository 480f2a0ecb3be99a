"""`zoo list` and `zoo info`: what the registries hold."""

from __future__ import annotations

from zoo.tools.listing import print_info, print_listing


def cmd_list(args) -> int:
    print_listing(args.kind)
    return 0


def cmd_info(args) -> int:
    print_info(args.name)
    return 0
