"""Who is calling (credentials -> principal) and what they may do (access rules)."""
