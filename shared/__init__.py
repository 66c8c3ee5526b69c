"""Code every function shares: settings, database, models, errors, logging."""
