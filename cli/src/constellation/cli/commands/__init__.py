"""The ``constellation`` subcommands; each module registers one group or command."""
