"""feedback-service: a gRPC service for thumbs-up / thumbs-down feedback on agent runs."""
