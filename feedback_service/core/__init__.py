"""What every layer shares: the records that flow between them, the errors
the rules raise, and the clock. A leaf package: it imports nothing of ours,
so any layer may import it without pointing upward."""
