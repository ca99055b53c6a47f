"""Names for containers started without --name: `adjective_surname`, as docker makes them.

A readable name is easier to type and remember than a short id. The surnames are of
people who shaped computing; the lists are hyperrun's own.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Container

from hyperrun.errors import UsageError

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
NAME_HINT = ("use 1 to 128 letters, digits, '_', '.' or '-', starting with a letter "
             "or a digit")


def validate_name(name: str) -> str:
    """name, if docker would take it as a container name; a usage error if not."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"invalid container name {name!r}", hint=NAME_HINT)
    return name


def new_id() -> str:
    """A container id: 64 hex digits, random, as docker's."""
    return secrets.token_hex(32)

ADJECTIVES = (
    "agile", "amazing", "bold", "brave", "bright", "calm", "careful", "cheerful", "clever",
    "cool", "curious", "daring", "eager", "elegant", "epic", "fearless", "focused", "friendly",
    "gallant", "gentle", "happy", "honest", "humble", "jolly", "keen", "kind", "lively",
    "lucid", "merry", "modest", "nimble", "noble", "patient", "peaceful", "polite", "proud",
    "quick", "quiet", "rapid", "serene", "sharp", "silent", "steady", "sunny", "swift",
    "tender", "tidy", "vivid", "warm", "witty", "zealous",
)

SURNAMES = (
    "allen", "babbage", "backus", "bell", "berners_lee", "cerf", "codd", "conway", "corbato",
    "dijkstra", "engelbart", "estrin", "feigenbaum", "floyd", "goldwasser", "hamilton",
    "hartmanis", "hoare", "hopper", "kahan", "kahn", "karp", "kay", "knuth", "lamport",
    "liskov", "lovelace", "mccarthy", "milner", "minsky", "naur", "newell", "nygaard",
    "pearl", "perlis", "ritchie", "rivest", "sammet", "shamir", "simon", "stonebraker",
    "sutherland", "tarjan", "thompson", "torvalds", "turing", "valiant", "wirth", "wing",
    "yao",
)


def generate(taken: Container[str]) -> str:
    """A random `adjective_surname` not in taken; a number is appended on a collision."""
    base = f"{secrets.choice(ADJECTIVES)}_{secrets.choice(SURNAMES)}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    return name
