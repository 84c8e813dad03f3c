"""schema.graphql, which clients read, is the schema the code serves."""

from pathlib import Path

from graph.schema import export_sdl

ROOT = Path(__file__).resolve().parent.parent


def test_schema_file_is_in_sync_with_the_code():
    on_disk = (ROOT / "schema.graphql").read_text()
    assert on_disk == export_sdl(), "schema.graphql is stale: run `make schema`"


def test_schema_has_the_contract_operations():
    sdl = export_sdl()
    for line in (
        "me: User!",
        "job(id: ID!): Job",
        "jobs(status: JobStatus, first: Int = 20, after: String): JobConnection!",
        "queueStats: QueueStats!",
        "register(username: String!, password: String!): User!",
        "login(username: String!, password: String!): AuthPayload!",
        # CONTRACT §7 added orderingKey, priority and runAt (defaults keep v1 calls working)
        "enqueue(requestData: String!, idempotencyKey: String, orderingKey: String, "
        "priority: Int = 0, runAt: DateTime): Job!",
        "enqueueMany(items: [EnqueueInput!]!): [Job!]!",
        "dequeue(waitSeconds: Float = 0): Job",
        "cancel(id: ID!): Job!",
        "processed(after: String): ProcessedEvent!",
    ):
        assert line in sdl
