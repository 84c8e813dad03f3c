"""The GraphQL API: accounts, the queue's mutations and queries, live events."""
