"""``python -m gateway.interlock``: how the gateway starts the interlock (no console script
needed on the path)."""

from gateway.interlock.cli import interlock

interlock(prog_name="gasgate interlock")
