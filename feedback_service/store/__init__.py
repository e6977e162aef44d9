"""Persistence: Peewee models, the queries on them, and the database binding."""
