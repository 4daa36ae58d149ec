"""The operator CLI (`siteview …`): dead-letter queues, replays, exports and imports, and
reconciliation with Clerk. Each command family lives in a module of its own and registers
its commands on the one Typer app in `cli.py`."""
