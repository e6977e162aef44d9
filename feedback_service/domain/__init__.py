"""Feedback rules: validation, errors and the operations, with no gRPC and no SQL."""
