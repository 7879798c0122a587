"""``python -m longshot.cli``: the plugin, as ``kubectl-longshot`` (the Krew launcher runs it this way)."""

from longshot.cli import main

main.run()
