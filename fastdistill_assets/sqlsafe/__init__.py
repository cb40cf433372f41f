"""Read-only SQL on users' databases: the parse check and the guarded executor.

Shared by every plane that runs SQL: the data plane (gold checks, schema and sample rows),
the gates and evaluation. Nothing here knows about gates or runs.
"""
