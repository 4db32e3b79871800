"""Fixtures for the unit tests: clients on a clean course keyspace, on the session's servers."""

import pytest

from course_lib.connection import connect, connect_cluster
from course_lib.keys import PREFIX, delete_prefix
from course_lib.settings import PROGRESS_FILE_SETTING


@pytest.fixture(autouse=True)
def own_progress_file(tmp_path, monkeypatch):
    """check() records progress: a test's records go to a file of its own, never to the session's (notebook 00 prints it)."""
    monkeypatch.setenv(PROGRESS_FILE_SETTING, str(tmp_path / "progress.json"))


@pytest.fixture
def r():
    """A client of the standalone server with every `course:` key deleted before the test."""
    client = connect()
    delete_prefix(client, f"{PREFIX}:")
    yield client
    client.close()


@pytest.fixture
def rc():
    """A cluster client with every `course:` key deleted (on every primary) before the test."""
    client = connect_cluster()
    delete_prefix(client, f"{PREFIX}:")
    yield client
    client.close()
