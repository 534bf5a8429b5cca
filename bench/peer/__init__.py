"""Peers of ``bench system``: other programs doing gasgate's safety job, in the same run."""
