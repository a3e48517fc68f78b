"""The HTTP service (``attribution-audit serve``): the JSON API under /v1, metrics, and the web console; adapters
over the services, like cli/."""
