"""CLI subcommands that need more than the core: each module has ``register(subparsers)`` and ``run(args)``."""
