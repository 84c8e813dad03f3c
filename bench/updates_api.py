"""`python -m graph` for bench/updates.py, with its accounts already in the store.

The benchmark needs thousands of users (one running job each); registering
them over HTTP would spend minutes in argon2, which is not what it measures.
This starts the API exactly as `python -m graph` does, except that, right after
the in-memory store opens, it inserts the users whose ids are listed (one a
line) in the file BENCH_USER_IDS, all with one precomputed password hash.
Tokens for them are minted by the driver with the API's JWT_SECRET.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from bson import ObjectId

from graph import store
from graph.__main__ import main

_open_store = store.open_store


async def _open_with_users(uri, db_name):
    client = await _open_store(uri, db_name)
    with open(os.environ["BENCH_USER_IDS"]) as f:
        ids = [line.strip() for line in f if line.strip()]
    now = datetime.now(UTC)
    docs = [{"_id": ObjectId(uid), "username": f"u{uid}", "username_key": f"u{uid}",
             "password_hash": "not-a-hash", "created_at": now, "token_version": 0,
             "role": "USER"} for uid in ids]
    await store.User.get_pymongo_collection().insert_many(docs)
    return client


store.open_store = _open_with_users

if __name__ == "__main__":
    main()
