"""HTTP: Starlette routes, the error renderer and pure ASGI middleware."""
