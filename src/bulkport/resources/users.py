"""Users: identified by id, or by email (case-insensitive) when the id is absent."""

from bulkport.config import get_settings
from bulkport.resources.base import Field, Kind, Resource


def allowed_roles() -> list[str]:
    return get_settings().allowed_roles


RESOURCE = Resource(
    name="users",
    description="People who write articles and comments.",
    order=0,
    natural_key=("email",),
    natural_key_ci=True,
    fields=(
        Field("id", Kind.ID),
        Field("email", Kind.EMAIL, required=True, description="Unique, case-insensitive"),
        Field("name", Kind.TEXT, required=True),
        Field("role", Kind.ENUM, required=True, choices=allowed_roles, filterable=True),
        Field("active", Kind.BOOL, insert_default="true", update_default="t.active",
              filterable=True),
        Field("created_at", Kind.TIMESTAMP, insert_default="now()",
              update_default="t.created_at", filterable=True),
        Field("updated_at", Kind.TIMESTAMP, insert_default="now()", update_default="now()",
              filterable=True),
    ),
)
