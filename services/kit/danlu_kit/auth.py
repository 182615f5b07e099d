"""Bearer tokens bound to projects, stored hashed.

A token file has one line per token: ``sha256:<hex> <project> [label]`` (blank lines and ``#``
comments ignored). Only hashes are ever stored; ``danlu-token new PROJECT`` prints a fresh token
and the line to add.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from danlu_kit.errors import FieldViolation, InvalidArgument, Unauthenticated

TOKEN_PREFIX = "dl_"


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenEntry:
    digest: str
    project: str
    label: str = ""


class TokenBook:
    """The tokens a service accepts, by hash."""

    def __init__(self, entries: list[TokenEntry]):
        self._by_digest = {e.digest: e for e in entries}

    @classmethod
    def from_file(cls, path: str | Path) -> TokenBook:
        entries = []
        for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) < 2 or not parts[0].startswith("sha256:") or len(parts[0]) != 71:
                raise InvalidArgument.from_violations(
                    "TOKEN_FILE_INVALID",
                    [
                        FieldViolation(
                            f"{path}:{number}", "expected 'sha256:<64 hex> PROJECT [label]'"
                        )
                    ],
                )
            entries.append(TokenEntry(parts[0], parts[1], " ".join(parts[2:])))
        return cls(entries)

    @classmethod
    def from_tokens(cls, tokens: dict[str, str]) -> TokenBook:
        """From plain ``{token: project}`` (bootstrap tokens passed in the environment)."""
        return cls([TokenEntry(hash_token(t), p) for t, p in tokens.items()])

    def merged(self, other: TokenBook) -> TokenBook:
        return TokenBook([*self._by_digest.values(), *other._by_digest.values()])

    def project_for(self, token: str) -> str:
        # Lookup by hash: the stored secret is never compared byte by byte.
        entry = self._by_digest.get(hash_token(token))
        if entry is not None:
            return entry.project
        raise Unauthenticated("the bearer token is not valid", reason="TOKEN_INVALID")


def parse_authorization(header: str | None) -> str:
    if not header:
        raise Unauthenticated(
            "missing 'authorization: Bearer <token>' metadata", reason="TOKEN_MISSING"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "authorization metadata must be 'Bearer <token>'", reason="TOKEN_MALFORMED"
        )
    return token.strip()


def main() -> None:
    """``danlu-token new PROJECT [LABEL]``: print a new token and its token-file line."""
    import sys

    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "new":
        raise SystemExit("usage: danlu-token new PROJECT [LABEL]")
    token = new_token()
    print(f"token: {token}")
    print(f"token file line: {hash_token(token)} {args[1]} {' '.join(args[2:])}".rstrip())
