"""``mimoq acl``: print the Redis ACL users for least-privilege producers and workers."""

from __future__ import annotations

import argparse

from mimoq.core.acl_users import users
from mimoq.core.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mimoq acl`` to the command's subparsers."""
    parser = sub.add_parser(
        "acl",
        help="print Redis ACL SETUSER lines for a producer user and a worker user",
        description="Least-privilege Redis users: producers may only run the enqueue script "
        "and read results and status; workers get mimoq's and arq's keys, nothing "
        "administrative. No password is printed: add one with ACL SETUSER NAME '>secret'.",
    )
    parser.add_argument(
        "--prefix",
        default="mimoq-",
        help="prefix of the user names (default mimoq-: mimoq-producer, mimoq-worker)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    for user in users(args.prefix):
        print(f"# {user.purpose}")
        print(user.setuser())
    print("# then set each user's password, e.g.: ACL SETUSER NAME '>long-random-secret'")
    return 0
