"""Where the fleet's state lives: the :class:`~fleet_monitor.store.protocol.Store` protocol
the HTTP layer talks to, and its implementations."""
