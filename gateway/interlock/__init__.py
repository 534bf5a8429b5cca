"""The interlock: a leak closes its linked valves in a process of its own, before anything is
written (``process``); the gateway keeps its link table and reconciles what it did (``room``);
the table and the leak test are pure (``table``). docs/interlock.md has the why."""

from gateway.interlock.process import Interlock, serve
from gateway.interlock.room import InterlockMode, InterlockRoom
from gateway.interlock.table import Entry, build, dumps, is_leak, loads

__all__ = [
    "Entry",
    "Interlock",
    "InterlockMode",
    "InterlockRoom",
    "build",
    "dumps",
    "is_leak",
    "loads",
    "serve",
]
