"""Comments: no natural key, so the id is required; they reference an article and a user."""

from bulkport.resources.base import Field, Kind, Resource

RESOURCE = Resource(
    name="comments",
    description="Comments on articles.",
    order=2,
    fields=(
        Field("id", Kind.ID, required=True),
        Field("body", Kind.TEXT, required=True, max_words=500,
              description="At most 500 whitespace-separated words"),
        Field("article_id", Kind.REF, required=True, references="articles", filterable=True),
        Field("user_id", Kind.REF, required=True, references="users", filterable=True),
        Field("created_at", Kind.TIMESTAMP, insert_default="now()",
              update_default="t.created_at", filterable=True),
    ),
)
