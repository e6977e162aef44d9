"""Server interceptors. server.py chains them, outermost first:
tracing (a server span continuing the caller's trace; only when tracing is
on) -> observability (metrics, access log, the span's outcome) -> error
statuses -> authentication (metadata -> principal) -> request (read and
decode the message, with a time limit) -> concurrency limit (unary calls) ->
authorization (the RPC's declared rule) -> change-stream limit. Public streams
(health Watch, reflection) pass only the error statuses, the request reading
and the public stream limit."""
