"""gRPC servicers: read the request, call one rule, return a message."""
