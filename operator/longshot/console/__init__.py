"""The web console (``python -m longshot console``; docs/console.md): builds, their tasks and merge queue, live, for
the people who run them, acting with each person's own Kubernetes identity."""
