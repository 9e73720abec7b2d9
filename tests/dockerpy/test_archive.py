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
