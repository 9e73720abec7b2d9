"""Fixtures for berth's docker-py regression tests.

The engine is started by guest-agent/agent/tests/dockerpy.rs (a
NativeEngine with busybox:latest loaded), which runs pytest with
DOCKER_HOST pointing at it and an empty DOCKER_CONFIG.
"""
import uuid

import docker
import pytest

IMAGE = "busybox:latest"


@pytest.fixture
def client():
    c = docker.from_env()
    yield c
    c.close()


@pytest.fixture
def api(client):
    return client.api


@pytest.fixture
def cleanup(client):
    """Names of containers, images and networks to remove after the test."""
    made = {"containers": [], "images": [], "networks": []}
    yield made
    for c in made["containers"]:
        try:
            client.api.remove_container(c, force=True, v=True)
        except docker.errors.NotFound:
            pass
    for i in made["images"]:
        try:
            client.api.remove_image(i, force=True)
        except docker.errors.NotFound:
            pass
    for n in made["networks"]:
        try:
            client.api.remove_network(n)
        except docker.errors.NotFound:
            pass


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def running(api, cleanup):
    """Starts a container running CMD (default `cat` with stdin open)."""

    def start(cmd="cat", **kwargs):
        kwargs.setdefault("stdin_open", True)
        c = api.create_container(IMAGE, cmd, detach=True, **kwargs)
        cleanup["containers"].append(c["Id"])
        api.start(c)
        return c["Id"]

    return start
