"""Server interceptors. server.py chains them, outermost first:
observability (metrics, access log) -> error statuses -> authentication
(metadata -> principal) -> request (read and decode the message, with a time
limit) -> concurrency limit -> authorization (the RPC's declared rule). Public
streams (health Watch, reflection) pass only the public stream limit."""
