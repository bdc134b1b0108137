"""The HTTP perimeter: one ASGI middleware per defence, assembled in order by `app.build_app`."""
