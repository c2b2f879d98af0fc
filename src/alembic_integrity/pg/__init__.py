"""Everything PostgreSQL-specific: catalog reads, quoting, literal SQL, connections, lock retries,
schema snapshots and the throwaway server. Imports only ``errors`` and ``settings``.
"""
