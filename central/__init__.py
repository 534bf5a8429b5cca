"""gasgate central: the gas company's monitoring center over every gateway (docs/central.md).

Data flow, as in the tree: ``link`` (MQTT 5 shared subscriptions to ``gasco/v1``) → ``inbound``
(pure parsing) → ``ingest`` (batched PostgreSQL transactions: alarms, incidents, gateways, sites)
→ ``notify`` (LISTEN/NOTIFY to every instance's consoles) and ``api``; officers' commands go back
through the ``commands`` outbox and the link. The database is the instances' only shared state.
"""
