import redis


def test_session_redis_is_a_real_server(redis_url: str) -> None:
    # given the session's embedded server
    client = redis.Redis.from_url(redis_url)
    # when
    info = client.info("server")
    # then: a real redis-server process answers, not an in-process fake
    assert info["redis_version"].startswith("6.")
    assert info["process_id"] > 0
    assert client.set("k", "v") and client.get("k") == b"v"
