"""Resource names (``projects/{project}/datasets/{dataset}``...) parsed with precise errors."""

from __future__ import annotations

import re
from dataclasses import dataclass

from danlu_kit.errors import FieldViolation, InvalidArgument

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
ID_RULE = "1-63 characters of lower-case letters, digits, '-', '_' and '.', starting with a letter or digit"


def check_id(value: str, field: str) -> str:
    if not ID_PATTERN.match(value or ""):
        raise InvalidArgument.from_violations(
            "INVALID_ID", [FieldViolation(field, f"{value!r} is not a valid id: {ID_RULE}")]
        )
    return value


@dataclass(frozen=True)
class NamePattern:
    """A pattern such as ``projects/{project}/datasets/{dataset}``."""

    template: str

    @property
    def keys(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.template)

    def parse(self, name: str, field: str = "name") -> dict[str, str]:
        parts = (name or "").split("/")
        template_parts = self.template.split("/")
        values: dict[str, str] = {}
        ok = len(parts) == len(template_parts)
        if ok:
            for part, expected in zip(parts, template_parts, strict=True):
                if expected.startswith("{"):
                    values[expected[1:-1]] = part
                    ok = ok and bool(ID_PATTERN.match(part))
                else:
                    ok = ok and part == expected
        if not ok:
            raise InvalidArgument.from_violations(
                "INVALID_NAME",
                [FieldViolation(field, f"{name!r} does not match {self.template} ({ID_RULE})")],
            )
        return values

    def format(self, **values: str) -> str:
        return self.template.format(**values)


PROJECT = NamePattern("projects/{project}")
