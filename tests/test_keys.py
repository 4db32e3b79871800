"""The key-naming convention and prefix cleanup, on a standalone server and across a cluster."""

import pytest

from course_lib.keys import channel, delete_prefix, hash_tag, key
from course_lib.settings import WORKSHOP_URL_SETTING


def test_key_joins_parts_under_the_course_prefix():
    assert key("caching", "user", 42) == "course:caching:user:42"
    assert key("cluster", hash_tag("user", 7), "cart") == "course:cluster:{user:7}:cart"


def test_a_channel_carries_the_learners_name_in_a_workshop(monkeypatch):
    assert channel("streams", "news") == "course:streams:news"  # the suite's setting is "off"
    monkeypatch.setenv(WORKSHOP_URL_SETTING, "redis://alice:secret@192.168.1.20:40123/3")
    assert channel("streams", "news") == "course:alice:streams:news"
    assert key("streams", "news") == "course:streams:news"  # keys live in alice's own database instead
    monkeypatch.setenv(WORKSHOP_URL_SETTING, "alice@somewhere")
    with pytest.raises(ValueError, match="a join line looks like"):
        channel("streams", "news")


@pytest.mark.parametrize("parts", [("",), ("has space",)])
def test_key_rejects_empty_or_spaced_parts(parts):
    with pytest.raises(ValueError, match="non-empty and without spaces"):
        key("caching", *parts)


@pytest.mark.parametrize("prefix", ["", "course:*", "course:a?"])
def test_delete_prefix_needs_a_literal_prefix(r, prefix):
    with pytest.raises(ValueError, match="literal prefix"):
        delete_prefix(r, prefix)


def test_delete_prefix_deletes_only_its_prefix(r):
    r.mset({f"course:a:{i}": i for i in range(1200)} | {"course:ab": 1, "course:b:1": 1})
    assert delete_prefix(r, "course:a:") == 1200
    assert sorted(r.scan_iter(match="course:*")) == ["course:ab", "course:b:1"]


def test_delete_prefix_reaches_every_primary_of_a_cluster(rc):
    names = [f"course:a:{i}" for i in range(600)]  # spread over all three primaries' slots
    for name in names:
        rc.set(name, 1)
    assert {rc.keyslot(n) // 5462 for n in names} == {0, 1, 2}
    assert delete_prefix(rc, "course:a:") == 600
    assert list(rc.scan_iter(match="course:a:*")) == []
