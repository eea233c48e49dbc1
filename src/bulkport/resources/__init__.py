"""The resource registry: every module in this package defining ``RESOURCE`` is a resource.

Adding a resource is one new module here plus its migration.
"""

from __future__ import annotations

import importlib
import pkgutil

from bulkport.errors import BadRequest
from bulkport.resources.base import Field, Kind, Problem, Resource


def _discover() -> dict[str, Resource]:
    found: list[Resource] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        resource = getattr(module, "RESOURCE", None)
        if isinstance(resource, Resource):
            found.append(resource)
    return {r.name: r for r in sorted(found, key=lambda r: r.order)}


RESOURCES: dict[str, Resource] = _discover()


def get_resource(name: str) -> Resource:
    """Look a resource up by name; unknown names are a 400 listing the allowed ones."""
    try:
        return RESOURCES[name]
    except KeyError:
        raise BadRequest(
            f"unknown resource {name!r}; use one of: {', '.join(RESOURCES)}",
            allowed=list(RESOURCES),
        ) from None


__all__ = ["RESOURCES", "Field", "Kind", "Problem", "Resource", "get_resource"]
