"""Roles (CONTRACT §9): the ADMIN_USERNAME bootstrap, setRole and the last-admin
rule, FORBIDDEN for signed-in non-admins, the audit log, and Job.owner.

Checks on what MongoDB holds run on the app's own event loop (app_client.portal),
so they hold for the in-memory store and a real MongoDB (MONGO_URI) alike.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import uuid

import pytest
from starlette.testclient import TestClient

from engine.settings import load_settings
from graph.settings import Settings
from engine.startup import StartupError
from graph.accounts import Accounts
from graph.app import create_app
from graph.store import Role, User
from tests.support import Api, GraphQLError, settings_env

ADMIN = "root_admin"
ADMIN_PASSWORD = "a long admin password"
PASSWORD = "correct horse battery"
LOGIN = "mutation($u:String!,$p:String!){login(username:$u,password:$p){token user{role}}}"
SET_ROLE = "mutation($u:String!,$r:Role!){setRole(username:$u,role:$r){id username role}}"


@pytest.fixture
def settings(settings_factory):
    """An API started with an admin account to make, in development."""
    return settings_factory(app_env="development", admin_username=ADMIN,
                            admin_password=ADMIN_PASSWORD)


@pytest.fixture
def admin(api) -> Api:
    token = api.call(LOGIN, {"u": ADMIN, "p": ADMIN_PASSWORD})["login"]["token"]
    return Api(api.http, token)


def name() -> str:
    return f"u_{uuid.uuid4().hex[:10]}"


def code_of(fn, *args) -> str:
    with pytest.raises(GraphQLError) as info:
        fn(*args)
    return info.value.code


def set_role(api: Api, username: str, role: str) -> dict:
    return api.call(SET_ROLE, {"u": username, "r": role})["setRole"]


def roles(app_client) -> dict[str, str]:
    """username: role, of every stored account, as MongoDB holds them."""
    async def read():
        return {u.username: u.role.value for u in await User.find_all().to_list()}

    return app_client.portal.call(read)


class Interleaved:
    """The users collection, letting other tasks run before each call. The in-memory
    store answers without ever waiting, so without this two coroutines never
    interleave their queries, as they do against a real MongoDB."""

    def __init__(self, collection):
        self._collection = collection

    def __getattr__(self, attribute):
        value = getattr(self._collection, attribute)
        if not asyncio.iscoroutinefunction(value):
            return value

        async def later(*args, **kwargs):
            await asyncio.sleep(0)
            return await value(*args, **kwargs)

        return later


@pytest.fixture
def interleaved(monkeypatch, app_client):
    collection = User.get_pymongo_collection()
    monkeypatch.setattr(User, "get_pymongo_collection",
                        classmethod(lambda cls: Interleaved(collection)))


def accounts_of(app_client) -> Accounts:
    return app_client.app.state.services.accounts


# ---------------------------------------------------------------- the bootstrap


def test_the_api_starts_with_the_admin_account_made(api, admin):
    assert admin.call("{ me { username role } }")["me"] == {"username": ADMIN, "role": "ADMIN"}


def test_the_bootstrap_makes_an_existing_user_admin_and_keeps_its_password(api, app_client):
    username = name()
    user = api.as_user(username, PASSWORD)
    assert user.call("{ me { role } }")["me"]["role"] == "USER"
    # what the next start of the API does with ADMIN_USERNAME set to this account
    app_client.portal.call(accounts_of(app_client).bootstrap_admin, username,
                           "another password, ignored")
    assert user.call("{ me { role } }")["me"]["role"] == "ADMIN"
    assert api.call(LOGIN, {"u": username, "p": PASSWORD})["login"]["user"]["role"] == "ADMIN"
    assert code_of(api.call, LOGIN, {"u": username, "p": "another password, ignored"}) \
        == "UNAUTHENTICATED"


def test_api_processes_starting_at_once_make_one_admin(app_client, interleaved):
    accounts = accounts_of(app_client)

    async def start_four():
        await asyncio.gather(*(accounts.bootstrap_admin("Boss_Admin", ADMIN_PASSWORD)
                               for _ in range(4)))

    app_client.portal.call(start_four)
    assert [r for u, r in roles(app_client).items() if u.casefold() == "boss_admin"] == ["ADMIN"]


def test_without_a_password_a_missing_admin_is_not_made_nor_registrable(settings_factory):
    settings = settings_factory(app_env="development", admin_username=ADMIN)
    with TestClient(create_app(settings)) as client:
        api = Api(client)
        assert code_of(api.call, LOGIN, {"u": ADMIN, "p": ADMIN_PASSWORD}) == "UNAUTHENTICATED"
        # else whoever registers it would be made an admin at the next start
        for taken in (ADMIN, ADMIN.upper()):
            assert code_of(api.as_user, taken, PASSWORD) == "CONFLICT"


def run_api(settings, tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graph"], env=settings_env(settings, **env),
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("password", [None, "", "eleven-char"])
def test_production_refuses_to_start_without_an_admin_password_of_12(settings_factory, tmp_path,
                                                                     password):
    env = {} if password is None else {"ADMIN_PASSWORD": password}
    done = run_api(settings_factory(), tmp_path, APP_ENV="production", JWT_SECRET="s" * 40,
                   ADMIN_USERNAME=ADMIN, **env)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ADMIN_PASSWORD" in lines[0], done.stderr


def test_production_accepts_an_admin_password_of_12(monkeypatch):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("JWT_SECRET", "s" * 40)
    monkeypatch.setenv("ADMIN_USERNAME", ADMIN)
    monkeypatch.setenv("ADMIN_PASSWORD", "twelve-chars")
    settings = load_settings(Settings)
    assert (settings.admin_username, settings.admin_password) == (ADMIN, "twelve-chars")
    assert settings.admin_dashboard is True
    monkeypatch.setenv("ADMIN_DASHBOARD", "false")
    assert load_settings(Settings).admin_dashboard is False


@pytest.mark.parametrize("variable, overrides", [
    ("ADMIN_USERNAME", {"admin_username": "has spaces"}),
    ("ADMIN_PASSWORD", {"admin_username": ADMIN, "admin_password": "short"}),
    ("ADMIN_PASSWORD", {"admin_username": ADMIN, "admin_password": "password123"}),  # common
])
def test_admin_settings_that_register_would_refuse_stop_the_start(settings_factory, variable,
                                                                  overrides):
    with pytest.raises(StartupError) as info:
        create_app(settings_factory(app_env="development", **overrides))
    assert str(info.value).startswith(variable) and "\n" not in str(info.value)


# ---------------------------------------------------------------- register and me


def test_register_gives_role_user_and_takes_no_role(api):
    username = name()
    created = api.call("mutation($u:String!,$p:String!){register(username:$u,password:$p)"
                       "{role}}", {"u": username, "p": PASSWORD})["register"]
    assert created == {"role": "USER"}
    assert code_of(api.call, "mutation{register(username:\"x_admin\",password:\"" + PASSWORD +
                   "\",role:ADMIN){role}}") == "GRAPHQL_VALIDATION_FAILED"
    assert api.call(LOGIN, {"u": username, "p": PASSWORD})["login"]["user"] == {"role": "USER"}


def test_users_stored_before_roles_read_as_user(api, app_client):
    username = name()
    user = api.as_user(username, PASSWORD)

    async def drop_the_role():
        await User.get_pymongo_collection().update_one({"username_key": username},
                                                       {"$unset": {"role": ""}})

    app_client.portal.call(drop_the_role)
    assert user.call("{ me { role } }")["me"]["role"] == "USER"


# ---------------------------------------------------------------- setRole


def test_set_role_is_for_admins_only(api):
    target = name()
    user = api.as_user(target, PASSWORD)
    assert code_of(set_role, user, target, "ADMIN") == "FORBIDDEN"
    assert code_of(set_role, api, target, "ADMIN") == "UNAUTHENTICATED"
    assert code_of(set_role, Api(api.http, "not.a.token"), target, "ADMIN") == "UNAUTHENTICATED"
    assert user.call("{ me { role } }")["me"]["role"] == "USER"


def test_an_admin_promotes_and_demotes(api, admin):
    target = name()
    user = api.as_user(target, PASSWORD)
    assert set_role(admin, target.upper(), "ADMIN") == {
        "id": user.call("{ me { id } }")["me"]["id"], "username": target, "role": "ADMIN"}
    # the new admin may use it at once, and lose it at once
    assert set_role(user, ADMIN, "USER")["role"] == "USER"
    assert code_of(set_role, admin, target, "USER") == "FORBIDDEN"
    assert set_role(user, ADMIN, "ADMIN")["role"] == "ADMIN"
    assert set_role(admin, target, "USER")["role"] == "USER"
    assert set_role(admin, target, "USER")["role"] == "USER"  # again: no change
    assert code_of(set_role, user, ADMIN, "USER") == "FORBIDDEN"


def test_the_last_admin_cannot_be_demoted(api, admin, app_client):
    assert code_of(set_role, admin, ADMIN, "USER") == "CONFLICT"
    assert admin.call("{ me { role } }")["me"]["role"] == "ADMIN"
    other = name()
    api.as_user(other, PASSWORD)
    set_role(admin, other, "ADMIN")
    assert set_role(admin, ADMIN, "USER")["role"] == "USER"  # one admin is left
    assert [u for u, r in roles(app_client).items() if r == "ADMIN"] == [other]


def test_admins_demoting_each_other_at_once_leave_an_admin(api, admin, app_client, interleaved):
    other = name()
    api.as_user(other, PASSWORD)
    set_role(admin, other, "ADMIN")
    accounts = accounts_of(app_client)

    async def both():
        return await asyncio.gather(accounts.set_role(ADMIN, Role.USER),
                                    accounts.set_role(other, Role.USER), return_exceptions=True)

    results = app_client.portal.call(both)
    admins = [u for u, r in roles(app_client).items() if r == "ADMIN"]
    assert admins, results
    refused = [r for r in results if isinstance(r, Exception)]
    assert refused and all(getattr(r, "code", None) == "CONFLICT" for r in refused), results


def test_set_role_of_an_unknown_user_is_not_found(admin):
    assert code_of(set_role, admin, "nobody_here", "ADMIN") == "NOT_FOUND"
    assert code_of(set_role, admin, "nobody_here", "USER") == "NOT_FOUND"


def test_each_admin_mutation_is_written_to_the_audit_log(api, admin, caplog):
    target = name()
    user = api.as_user(target, PASSWORD)
    admin_id = admin.call("{ me { id } }")["me"]["id"]
    with caplog.at_level(logging.INFO, logger="audit"):
        set_role(admin, target, "ADMIN")
        code_of(set_role, admin, "nobody_here", "ADMIN")
        set_role(admin, target, "USER")
        code_of(set_role, Api(api.http), target, "USER")  # no token: no line
        code_of(set_role, user, ADMIN, "USER")  # demoted just now: FORBIDDEN, no line
    lines = [r for r in caplog.records if r.name == "audit"]
    assert [(r.admin_id, r.operation, r.arguments, r.outcome) for r in lines] == [
        (admin_id, "setRole", {"username": target, "role": "ADMIN"}, "ok"),
        (admin_id, "setRole", {"username": "nobody_here", "role": "ADMIN"}, "NOT_FOUND"),
        (admin_id, "setRole", {"username": target, "role": "USER"}, "ok"),
    ]
    assert admin_id in lines[0].getMessage() and target in lines[0].getMessage()


# ---------------------------------------------------------------- Job.owner


def test_job_owner_is_who_enqueued_it_loaded_once_per_page(api, monkeypatch):
    username = name()
    user = api.as_user(username, PASSWORD)
    me = user.call("{ me { id username role } }")["me"]
    enqueued = user.call('mutation{enqueue(requestData:"a"){owner{username}}}')["enqueue"]
    assert enqueued == {"owner": {"username": username}}
    user.enqueue_many([{"requestData": str(i)} for i in range(4)])

    batches = []
    get_many = Accounts.get_many

    async def counted(self, ids):
        batches.append(list(ids))
        return await get_many(self, ids)

    monkeypatch.setattr(Accounts, "get_many", counted)
    page = user.call("{ jobs(first: 10) { edges { node { id owner { id username role } } } } }")
    owners = [e["node"]["owner"] for e in page["jobs"]["edges"]]
    assert owners == [me] * 5
    assert len(batches) == 1, batches


def test_owners_of_several_users_come_in_order_from_one_batch(api, app_client):
    ann, bob = name(), name()
    ann_id = api.as_user(ann, PASSWORD).call("{ me { id } }")["me"]["id"]
    bob_id = api.as_user(bob, PASSWORD).call("{ me { id } }")["me"]["id"]
    found = app_client.portal.call(accounts_of(app_client).get_many,
                                   [bob_id, "not-an-id", ann_id, bob_id, "0" * 24])
    assert [u and u.username for u in found] == [bob, None, ann, bob, None]


def test_a_processed_listener_gets_the_owner_too(api, app_client, workers):
    username = name()
    user = api.as_user(username, PASSWORD)
    job = user.enqueue("x")
    assert workers.run_burst().returncode == 0
    query = "subscription { processed(after: \"0\") { job { id owner { username } } } }"
    with app_client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init",
                      "payload": {"Authorization": f"Bearer {user.token}"}})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
        message = ws.receive_json()
    assert message["type"] == "next", message
    assert message["payload"]["data"]["processed"]["job"] == {
        "id": job["id"], "owner": {"username": username}}
