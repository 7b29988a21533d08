"""The HTTP layer: the app factory, the device-write table, the error table, the API and
operator routes, metrics, the fast path, and the waitress server. No business rule lives
here: it parses, calls the domain and the store, and renders."""
