"""Articles: identified by id, or by slug when the id is absent; written by a user."""

from collections.abc import Callable
from typing import Any

from bulkport.resources.base import NULL, Field, Kind, Problem, Resource

STATUSES = ("draft", "published", "archived")
SLUG_PATTERN = r"[a-z0-9]+(-[a-z0-9]+)*"


def _draft_has_no_published_at(
    record: dict[str, str], raw: Callable[[str], Any]
) -> list[Problem]:
    if record["status"] == "draft" and record["published_at"] not in (NULL, None):
        return [
            Problem(
                "published_at",
                "draft_cannot_have_published_at",
                "a draft cannot have published_at; remove it or change status",
                raw("published_at"),
            )
        ]
    return []


RESOURCE = Resource(
    name="articles",
    description="Blog articles.",
    order=1,
    natural_key=("slug",),
    fields=(
        Field("id", Kind.ID),
        Field("slug", Kind.TEXT, required=True, pattern=SLUG_PATTERN,
              pattern_code="invalid_slug_format", description="kebab-case, unique"),
        Field("title", Kind.TEXT, required=True),
        Field("description", Kind.TEXT),
        Field("body", Kind.TEXT, required=True),
        Field("author_id", Kind.REF, required=True, references="users", filterable=True),
        Field("tags", Kind.TAGS, insert_default="'{}'", update_default="'{}'"),
        Field("published_at", Kind.TIMESTAMP),
        Field("status", Kind.ENUM, required=True, choices=lambda: STATUSES, filterable=True),
        Field("created_at", Kind.TIMESTAMP, insert_default="now()",
              update_default="t.created_at", filterable=True),
        Field("updated_at", Kind.TIMESTAMP, insert_default="now()", update_default="now()",
              filterable=True),
    ),
    checks=(_draft_has_no_published_at,),
)
