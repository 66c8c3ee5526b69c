"""The platform every function shares. Functions import from its two façades only:
`shared.plain` for plain Lambda handlers and `shared.fastapi` for FastAPI functions; every other
module is private. Importing the package does nothing else: no hook, no environment read.
"""
