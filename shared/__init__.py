"""Code every function shares: settings, database, models, errors, logging.

Every handler imports this package, so SnapStart's runtime hooks are registered here (a no-op
outside Lambda's runtimes; see shared/snapstart.py).
"""

from shared.snapstart import register_hooks

register_hooks()
