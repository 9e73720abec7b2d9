"""The archive routes with docker-py as the client (issue 12, group 5):
HEAD/GET/PUT `/containers/{id}/archive` with docker-py's query encoding
(requests percent-encodes `path=`, `+` and `&` included; the CLI's Go
client encodes the same characters differently), on versioned and
unversioned paths."""
import base64
import io
import json
import tarfile

import docker
import pytest
from conftest import IMAGE

# Characters the two encoders treat differently: requests writes a space
# as `+` and escapes `+`, `&`, `=`, non-ASCII; Go's url.Values does the same
# but for `~` and `*`. A literal `+` must not turn into a space.
NAMES = ["/tmp/plain.txt", "/tmp/a b+c&d=e.txt", "/tmp/ünï~*cödé.txt", "/tmp/100%.txt"]


def tar_of(name, data):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def read_tar(stream):
    data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.mark.parametrize("path", NAMES)
def test_put_get_and_head_with_docker_py_encoding(api, running, path):
    cid = running("sleep 1000")
    directory, _, base = path.rpartition("/")
    assert api.put_archive(cid, directory, tar_of(base, path.encode()))
    stream, stat = api.get_archive(cid, path)
    assert stat["name"] == base
    assert read_tar(stream) == {base: path.encode()}
    # HEAD: docker-py has no call for it; the same session sends it.
    response = api.head(api._url("/containers/{0}/archive", cid), params={"path": path})
    assert response.status_code == 200, response.text
    header = response.headers["X-Docker-Container-Path-Stat"]
    assert json.loads(base64.b64decode(header))["name"] == base


def test_unversioned_path_and_missing_file(api, running):
    cid = running("sleep 1000")
    url = api._url("/containers/{0}/archive", cid, versioned_api=False)
    response = api.head(url, params={"path": "/etc/passwd"})
    assert response.status_code == 200
    with pytest.raises(docker.errors.NotFound) as err:
        api.get_archive(cid, "/no/such file")
    assert "/no/such file" in str(err.value)


def test_archive_reaches_the_volumes_of_a_stopped_container(api, client, cleanup):
    """Issue 12 group 5: a created (never started) or stopped container's
    volumes are mounted for the archive routes, as dockerd does; a PUT into
    a read-only volume is refused with dockerd's error."""
    volume = client.volumes.create()
    try:
        c = api.create_container(
            IMAGE,
            ["cat", "/vol1/data.txt"],
            volumes=["/vol1", "/ro"],
            host_config=api.create_host_config(binds={volume.name: {"bind": "/ro", "mode": "ro"}}),
        )
        cid = c["Id"]
        cleanup["containers"].append(cid)
        assert api.put_archive(cid, "/vol1", tar_of("data.txt", b"in the volume\n"))
        stream, stat = api.get_archive(cid, "/vol1/data.txt")
        assert stat["name"] == "data.txt"
        assert read_tar(stream) == {"data.txt": b"in the volume\n"}
        response = api.head(api._url("/containers/{0}/archive", cid), params={"path": "/vol1/data.txt"})
        assert response.status_code == 200, response.text
        api.start(cid)
        assert api.wait(cid)["StatusCode"] == 0
        assert api.logs(cid) == b"in the volume\n"
        # Stopped now: the file is still read from the volume.
        stream, _ = api.get_archive(cid, "/vol1/data.txt")
        assert read_tar(stream) == {"data.txt": b"in the volume\n"}
        with pytest.raises(docker.errors.APIError) as err:
            api.put_archive(cid, "/ro", tar_of("x", b"x"))
        assert err.value.status_code == 400
        assert "mounted volume is marked read-only" in str(err.value)
    finally:
        for cid in list(cleanup["containers"]):
            api.remove_container(cid, force=True, v=True)
        cleanup["containers"].clear()
        volume.remove()
