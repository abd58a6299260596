"""Topics: services put users into named groups, list them page by page, and take them out."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Scope
from app.preferences.models import SmsPreferences
from app.topics.models import TopicSubscription
from app.users.models import User
from tests.conftest import as_user

MakeApiKey = Callable[..., Awaitable[dict[str, str]]]

TOPIC = "team-42"


def subscribers_url(topic: str = TOPIC) -> str:
    return f"/api/topics/{topic}/subscribers"


@pytest.fixture
async def service(make_api_key: MakeApiKey) -> dict[str, str]:
    """Headers of a service holding `users:write`."""
    return await make_api_key(Scope.USERS_WRITE)


async def _post(
    client: httpx.AsyncClient, headers: dict[str, str], user_ids: list[str], topic: str = TOPIC
) -> httpx.Response:
    return await client.post(subscribers_url(topic), json={"user_ids": user_ids}, headers=headers)


async def _put(
    client: httpx.AsyncClient, headers: dict[str, str], user_ids: list[str], topic: str = TOPIC
) -> httpx.Response:
    return await client.put(subscribers_url(topic), json={"user_ids": user_ids}, headers=headers)


async def _walk(
    client: httpx.AsyncClient, headers: dict[str, str], *, limit: int, topic: str = TOPIC
) -> list[list[str]]:
    """Every page of the topic, following `next_cursor` until there is none."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(subscribers_url(topic), params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["topic"] == topic
        ids = [subscriber["user_id"] for subscriber in body["subscribers"]]
        pages.append(ids)
        assert len(pages) <= 100, "pagination does not end"
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert cursor == ids[-1]


async def _subscribed(session: AsyncSession, topic: str = TOPIC) -> list[str]:
    """The topic's members as the database holds them."""
    statement = (
        select(User.external_id)
        .join(TopicSubscription, TopicSubscription.user_id == User.id)
        .where(TopicSubscription.topic == topic)
        .order_by(User.external_id)
    )
    return list((await session.scalars(statement)).all())


async def _count(session: AsyncSession, model: type[User | TopicSubscription]) -> int:
    return (await session.execute(select(func.count()).select_from(model))).scalar_one()


# Adding


async def test_post_adds_subscribers_and_creates_unknown_users_without_a_number(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    known = await client.patch(
        "/api/user/profile", json={"phone_number": "+14155552671"}, headers=as_user("alice")
    )
    assert known.status_code == 200

    response = await _post(client, service, ["alice", "bob", "carol"])

    assert response.status_code == 200, response.text
    assert response.json() == {
        "topic": TOPIC,
        "added": 3,
        "removed": 0,
        "subscriber_count": 3,
    }
    assert await _subscribed(session) == ["alice", "bob", "carol"]
    assert await _count(session, User) == 3
    bob = await client.get("/api/users/bob", headers=service)
    assert bob.status_code == 200
    assert bob.json()["phone_number"] is None
    assert bob.json()["sms_enabled"] is True  # created with the default preferences
    alice = await client.get("/api/users/alice", headers=service)
    assert alice.json()["phone_number"] == "+14155552671"  # an existing user is left as is


async def test_duplicates_in_one_request_count_once(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    response = await _post(client, service, ["dan", "eve", "dan", "dan", "eve"])

    assert response.status_code == 200, response.text
    assert response.json()["added"] == 2
    assert response.json()["subscriber_count"] == 2
    assert await _subscribed(session) == ["dan", "eve"]
    assert await _count(session, User) == 2
    preferences = await session.execute(select(func.count()).select_from(SmsPreferences))
    assert preferences.scalar_one() == 2


async def test_adding_existing_subscribers_again_adds_nothing(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    await _post(client, service, ["a1", "a2"])

    overlapping = await _post(client, service, ["a2", "a3"])
    assert overlapping.json()["added"] == 1
    assert overlapping.json()["subscriber_count"] == 3

    again = await _post(client, service, ["a1", "a2", "a3"])
    assert again.status_code == 200
    assert again.json() == {"topic": TOPIC, "added": 0, "removed": 0, "subscriber_count": 3}
    assert await _subscribed(session) == ["a1", "a2", "a3"]


async def test_a_team_of_50_is_added_in_one_call_and_listed_in_full(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    team = [f"member-{n:02d}" for n in range(50)]

    response = await _post(client, service, team, topic="team-50")

    assert response.status_code == 200, response.text
    assert response.json()["added"] == 50
    assert response.json()["subscriber_count"] == 50
    pages = await _walk(client, service, limit=20, topic="team-50")
    assert [len(page) for page in pages] == [20, 20, 10]
    assert [user_id for page in pages for user_id in page] == sorted(team)
    assert len(await _subscribed(session, "team-50")) == 50


async def test_exactly_10000_user_ids_are_accepted(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    user_ids = [_short_id(n) for n in range(10_000)]

    response = await client.post(
        subscribers_url(), content=_compact({"user_ids": user_ids}), headers=_json(service)
    )

    assert response.status_code == 200, response.text
    assert response.json()["added"] == 10_000
    assert response.json()["subscriber_count"] == 10_000
    assert await _count(session, TopicSubscription) == 10_000


# Replacing


async def test_put_replaces_the_set_and_reports_the_change(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    await _post(client, service, ["ann", "ben", "cat"])

    response = await _put(client, service, ["cat", "dot", "dot"])

    assert response.status_code == 200, response.text
    assert response.json() == {"topic": TOPIC, "added": 1, "removed": 2, "subscriber_count": 2}
    assert await _subscribed(session) == ["cat", "dot"]
    listed = await client.get(subscribers_url(), headers=service)
    assert [s["user_id"] for s in listed.json()["subscribers"]] == ["cat", "dot"]
    assert await _count(session, User) == 4  # leaving a topic does not erase the user

    same = await _put(client, service, ["dot", "cat"])
    assert same.json() == {"topic": TOPIC, "added": 0, "removed": 0, "subscriber_count": 2}


async def test_put_creates_a_topic_from_nothing(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    response = await _put(client, service, ["fox", "gnu"])

    assert response.status_code == 200, response.text
    assert response.json() == {"topic": TOPIC, "added": 2, "removed": 0, "subscriber_count": 2}
    assert await _subscribed(session) == ["fox", "gnu"]


async def test_put_with_an_empty_list_clears_the_topic(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    await _post(client, service, ["hal", "ian"])

    response = await _put(client, service, [])

    assert response.status_code == 200, response.text
    assert response.json() == {"topic": TOPIC, "added": 0, "removed": 2, "subscriber_count": 0}
    listed = await client.get(subscribers_url(), headers=service)
    assert listed.json() == {"topic": TOPIC, "subscribers": [], "next_cursor": None}
    assert await _count(session, User) == 2


async def test_changing_one_topic_leaves_the_others_alone(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    await _post(client, service, ["jan", "kai"], topic="team-1")
    await _post(client, service, ["jan", "lou"], topic="team-2")

    await _put(client, service, ["kai"], topic="team-1")
    await _post(client, service, ["max"], topic="team-1")

    assert await _subscribed(session, "team-1") == ["kai", "max"]
    assert await _subscribed(session, "team-2") == ["jan", "lou"]
    other = await client.get(subscribers_url("team-2"), headers=service)
    assert [s["user_id"] for s in other.json()["subscribers"]] == ["jan", "lou"]


# Listing


async def test_get_lists_subscribers_sorted_by_user_id(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    await _post(client, service, ["u2", "u10", "b", "u1", "a"])

    response = await client.get(subscribers_url(), headers=service)

    assert response.status_code == 200
    body = response.json()
    assert body["topic"] == TOPIC
    assert [s["user_id"] for s in body["subscribers"]] == ["a", "b", "u1", "u10", "u2"]
    assert all(s["subscribed_at"] for s in body["subscribers"])
    assert body["next_cursor"] is None


async def test_an_unknown_topic_is_an_empty_list(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    response = await client.get(subscribers_url("nobody-here"), headers=service)

    assert response.status_code == 200
    assert response.json() == {"topic": "nobody-here", "subscribers": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("members", "limit", "page_sizes"),
    [
        (7, 3, [3, 3, 1]),
        (6, 3, [3, 3]),  # a full last page: no empty page after it
        (3, 1, [1, 1, 1]),
        (3, 100, [3]),
    ],
)
async def test_walking_the_pages_sees_every_subscriber_exactly_once(
    client: httpx.AsyncClient,
    service: dict[str, str],
    members: int,
    limit: int,
    page_sizes: list[int],
) -> None:
    user_ids = [f"user{n}" for n in range(members)]  # user10 sorts before user2
    await _post(client, service, user_ids[::-1])

    pages = await _walk(client, service, limit=limit)

    assert [len(page) for page in pages] == page_sizes
    seen = [user_id for page in pages for user_id in page]
    assert seen == sorted(user_ids)
    assert len(set(seen)) == members


async def test_a_cursor_past_the_end_is_an_empty_page(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    await _post(client, service, ["ada", "bea"])

    response = await client.get(subscribers_url(), params={"cursor": "zzz"}, headers=service)

    assert response.status_code == 200
    assert response.json()["subscribers"] == []
    assert response.json()["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "query.limit"),
        ({"limit": 1001}, "query.limit"),
        ({"limit": "ten"}, "query.limit"),
        ({"cursor": "a b"}, "query.cursor"),
    ],
)
async def test_bad_paging_parameters_are_422(
    client: httpx.AsyncClient, service: dict[str, str], params: dict[str, str | int], field: str
) -> None:
    response = await client.get(subscribers_url(), params=params, headers=service)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert field in [error["field"] for error in response.json()["errors"]]


# Removing


async def test_delete_one_subscriber(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    await _post(client, service, ["nia", "oli"])

    response = await client.delete(f"{subscribers_url()}/nia", headers=service)

    assert response.status_code == 204
    assert response.content == b""
    assert await _subscribed(session) == ["oli"]
    assert await _count(session, User) == 2  # still a user, just not in the topic

    again = await client.delete(f"{subscribers_url()}/nia", headers=service)
    assert again.status_code == 404
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["code"] == "not_subscribed"


async def test_delete_one_from_a_topic_they_are_not_in(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    await _post(client, service, ["pat"], topic="team-1")

    response = await client.delete(f"{subscribers_url('team-2')}/pat", headers=service)

    assert response.status_code == 404
    assert response.json()["code"] == "not_subscribed"
    assert await _subscribed(session, "team-1") == ["pat"]


async def test_delete_an_unknown_user_is_user_not_found(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    await _post(client, service, ["quinn"])

    response = await client.delete(f"{subscribers_url()}/nobody", headers=service)

    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert await _subscribed(session) == ["quinn"]
    assert await _count(session, User) == 1  # nobody was created on the way


async def test_delete_all_empties_only_that_topic(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    await _post(client, service, ["ray", "sal", "tom"])
    await _post(client, service, ["ray"], topic="team-7")

    response = await client.delete(subscribers_url(), headers=service)

    assert response.status_code == 204
    assert response.content == b""
    listed = await client.get(subscribers_url(), headers=service)
    assert listed.json() == {"topic": TOPIC, "subscribers": [], "next_cursor": None}
    assert await _subscribed(session, "team-7") == ["ray"]
    assert await _count(session, User) == 3

    again = await client.delete(subscribers_url(), headers=service)
    assert again.status_code == 204


async def test_erasing_a_user_takes_them_out_of_their_topics(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    await _post(client, service, ["uma", "vic"])

    erased = await client.delete("/api/users/uma", headers=service)

    assert erased.status_code == 204
    listed = await client.get(subscribers_url(), headers=service)
    assert [s["user_id"] for s in listed.json()["subscribers"]] == ["vic"]
    assert await _subscribed(session) == ["vic"]


# Who may


_ENDPOINTS = [
    ("GET", "", None),
    ("PUT", "", {"user_ids": ["wes"]}),
    ("POST", "", {"user_ids": ["wes"]}),
    ("DELETE", "", None),
    ("DELETE", "/wes", None),
]


@pytest.mark.parametrize(("method", "suffix", "body"), _ENDPOINTS)
async def test_no_token_is_401(
    client: httpx.AsyncClient,
    session: AsyncSession,
    method: str,
    suffix: str,
    body: dict[str, list[str]] | None,
) -> None:
    response = await client.request(method, subscribers_url() + suffix, json=body)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "missing_credentials"
    assert await _count(session, User) == 0


@pytest.mark.parametrize(("method", "suffix", "body"), _ENDPOINTS)
async def test_a_key_without_users_write_is_403(
    client: httpx.AsyncClient,
    session: AsyncSession,
    make_api_key: MakeApiKey,
    method: str,
    suffix: str,
    body: dict[str, list[str]] | None,
) -> None:
    headers = await make_api_key(Scope.SMS_SEND, Scope.SMS_BULK, Scope.SMS_READ)

    response = await client.request(method, subscribers_url() + suffix, json=body, headers=headers)

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "missing_scope"
    assert await _count(session, User) == 0
    assert await _count(session, TopicSubscription) == 0


@pytest.mark.parametrize(("method", "suffix", "body"), _ENDPOINTS)
async def test_an_end_user_is_403(
    client: httpx.AsyncClient,
    session: AsyncSession,
    method: str,
    suffix: str,
    body: dict[str, list[str]] | None,
) -> None:
    response = await client.request(
        method, subscribers_url() + suffix, json=body, headers=as_user("wes")
    )

    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"
    assert await _count(session, TopicSubscription) == 0


async def test_an_end_user_cannot_remove_subscribers(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    await _post(client, service, ["wes", "xan"])

    one = await client.delete(f"{subscribers_url()}/xan", headers=as_user("wes"))
    everyone = await client.delete(subscribers_url(), headers=as_user("wes"))

    assert one.status_code == everyone.status_code == 403
    assert await _subscribed(session) == ["wes", "xan"]


async def test_an_admin_user_may_manage_topics(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    admin = as_user("root", admin=True)

    added = await _post(client, admin, ["yan", "zoe"])
    assert added.status_code == 200, added.text
    assert added.json()["added"] == 2

    replaced = await _put(client, admin, ["zoe"])
    assert replaced.json()["removed"] == 1

    listed = await client.get(subscribers_url(), headers=admin)
    assert [s["user_id"] for s in listed.json()["subscribers"]] == ["zoe"]

    assert (await client.delete(f"{subscribers_url()}/zoe", headers=admin)).status_code == 204
    assert await _subscribed(session) == []


async def test_an_admin_key_may_manage_topics(
    client: httpx.AsyncClient, session: AsyncSession, make_api_key: MakeApiKey
) -> None:
    response = await _post(client, await make_api_key(Scope.ADMIN), ["amy"])

    assert response.status_code == 200, response.text
    assert await _subscribed(session) == ["amy"]


# Bad input


@pytest.mark.parametrize(
    "topic",
    [
        "team%2042",  # a space
        "-team",
        ".team",
        "t" * 101,
        "caf%C3%A9",  # not ASCII
        "team%2A",  # '*'
    ],
)
async def test_an_invalid_topic_name_is_422(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str], topic: str
) -> None:
    url = subscribers_url(topic)
    for response in [
        await client.post(url, json={"user_ids": ["bo"]}, headers=service),
        await client.put(url, json={"user_ids": ["bo"]}, headers=service),
        await client.get(url, headers=service),
        await client.delete(url, headers=service),
        await client.delete(f"{url}/bo", headers=service),
    ]:
        assert response.status_code == 422, response.request.method
        assert response.json()["code"] == "validation_error"
        assert "path.topic" in [error["field"] for error in response.json()["errors"]]
    assert await _count(session, User) == 0
    assert await _count(session, TopicSubscription) == 0


@pytest.mark.parametrize("topic", ["t" * 100, "a", "Team_A.b:c-1", "42"])
async def test_valid_topic_names_are_accepted(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str], topic: str
) -> None:
    response = await _post(client, service, ["cy"], topic=topic)

    assert response.status_code == 200, response.text
    assert response.json()["topic"] == topic
    assert await _subscribed(session, topic) == ["cy"]


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_more_than_10000_user_ids_is_422_and_writes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str], method: str
) -> None:
    user_ids = [_short_id(n) for n in range(10_001)]
    content = _compact({"user_ids": user_ids})
    assert len(content) < 64 * 1024  # under the body limit: this is the list's own limit

    response = await client.request(
        method, subscribers_url(), content=content, headers=_json(service)
    )

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "body.user_ids" in [error["field"] for error in response.json()["errors"]]
    assert await _count(session, TopicSubscription) == 0
    assert await _count(session, User) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_ids": ["al"], "topic": "other"}, "body.topic"),
        ({"user_ids": ["al ice"]}, "body.user_ids.0"),
        ({"user_ids": ["ok", " al"]}, "body.user_ids.1"),
        ({"user_ids": ["al\n"]}, "body.user_ids.0"),
        ({"user_ids": ["al\tice"]}, "body.user_ids.0"),
        ({"user_ids": [""]}, "body.user_ids.0"),
        ({"user_ids": ["x" * 256]}, "body.user_ids.0"),
        ({"user_ids": [42]}, "body.user_ids.0"),
        ({"user_ids": "al"}, "body.user_ids"),
        ({}, "body.user_ids"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_a_bad_body_is_422_and_writes_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    service: dict[str, str],
    method: str,
    body: dict[str, object],
    field: str,
) -> None:
    await _post(client, service, ["kept"])

    response = await client.request(method, subscribers_url(), json=body, headers=service)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "validation_error"
    assert field in [error["field"] for error in response.json()["errors"]]
    assert await _subscribed(session) == ["kept"]
    assert await _count(session, User) == 1


async def test_post_with_no_user_ids_is_422(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    response = await _post(client, service, [])

    assert response.status_code == 422
    assert "body.user_ids" in [error["field"] for error in response.json()["errors"]]


async def test_a_user_id_with_whitespace_in_the_path_is_422(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    response = await client.delete(f"{subscribers_url()}/al%20ice", headers=service)

    assert response.status_code == 422
    assert "path.user_id" in [error["field"] for error in response.json()["errors"]]


async def test_malformed_json_is_400(client: httpx.AsyncClient, service: dict[str, str]) -> None:
    response = await client.post(
        subscribers_url(), content=b'{"user_ids": ["a"', headers=_json(service)
    )

    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"


def _short_id(n: int) -> str:
    """Distinct ids of at most three characters, so 10,001 of them fit the test's body limit."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    digits = ""
    while True:
        n, digit = divmod(n, len(alphabet))
        digits = alphabet[digit] + digits
        if n == 0:
            return digits


def _compact(body: dict[str, list[str]]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _json(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "content-type": "application/json"}
