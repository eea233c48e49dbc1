"""The HTTP layer: thin route handlers over the job store and pipelines."""
