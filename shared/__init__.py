"""The platform every function shares: settings, engine and sessions, the error mapping, the
Lambda/HTTP boundary, FastAPI glue, secrets, logs. No function's own domain lives here.

Every handler imports this package, so SnapStart's runtime hooks are registered here (a no-op
outside Lambda's runtimes; see shared/_snapstart.py).
"""

from shared._snapstart import register_hooks

register_hooks()
