"""bulkport: bulk import/export of users, articles and comments on PostgreSQL."""

__version__ = "0.1.0"
