"""Exec and attach streams with docker-py as the client (issue 12, groups 4
and 13): framing decided by the start request, streamed and socket output,
exit codes, detach keys, and dockerd's upgrade rules."""
import json
import os
import socket
import threading
import time

import docker
import pytest
from docker.utils.socket import next_frame_header, read_exactly

from conftest import IMAGE

CTRL_P, CTRL_Q, CTRL_X = b"\x10", b"\x11", b"\x18"


def raw_sock(sock):
    return getattr(sock, "_sock", sock)


def read_until_closed(sock, timeout=10):
    sock = raw_sock(sock)
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def read_frames(sock, timeout=10):
    """All stdcopy frames until EOF, as (stream, payload) pairs."""
    sock = raw_sock(sock)
    sock.settimeout(timeout)
    frames = []
    while True:
        stream, size = next_frame_header(sock)
        if stream == -1:
            return frames
        frames.append((stream, read_exactly(sock, size)))


def assert_detached(sock):
    """The engine closed the connection after the detach sequence."""
    sock = raw_sock(sock)
    sock.settimeout(10)
    try:
        sock.sendall(b"after detach\n")
    except OSError:
        return
    assert sock.recv(128) == b""


def wait_for(predicate, what, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_first_output_of_a_quick_exec_is_never_lost(api, running):
    """The process starts after the 101 head, so docker-py's buffered head
    parsing cannot swallow the first frame."""
    cid = running()
    for _ in range(20):
        exec_id = api.exec_create(cid, ["echo", "hello"])
        assert api.exec_start(exec_id) == b"hello\n"


def test_tty_exec_started_without_tty_is_framed_as_stdout(api, running):
    cid = running()
    exec_id = api.exec_create(cid, ["printf", "yay"], tty=True)
    sock = api.exec_start(exec_id, socket=True)
    try:
        assert read_frames(sock) == [(1, b"yay")]
    finally:
        sock.close()


def test_tty_exec_started_with_tty_is_raw(api, running):
    cid = running()
    exec_id = api.exec_create(cid, ["printf", "raw\\n"], tty=True)
    assert api.exec_start(exec_id, tty=True) == b"raw\r\n"


def test_streamed_exec_output_and_demux(api, running):
    cid = running()
    cmd = ["sh", "-c", "echo out; sleep 0.3; echo err >&2"]
    exec_id = api.exec_create(cid, cmd)
    chunks = list(api.exec_start(exec_id, stream=True, demux=True))
    assert (b"out\n", None) in chunks
    assert (None, b"err\n") in chunks
    exec_id = api.exec_create(cid, ["echo", "hello\nworld"])
    assert b"".join(api.exec_start(exec_id, stream=True)) == b"hello\nworld\n"


def test_exec_socket_sees_output_then_exit_code(api, running):
    cid = running()
    exec_id = api.exec_create(cid, ["sh", "-c", "echo bye; exit 3"])
    sock = api.exec_start(exec_id, socket=True)
    try:
        assert read_frames(sock) == [(1, b"bye\n")]
    finally:
        sock.close()
    info = api.exec_inspect(exec_id)
    assert info["ExitCode"] == 3
    assert info["Running"] is False


def test_exec_stdin_over_socket(api, running):
    cid = running()
    exec_id = api.exec_create(cid, ["sh", "-c", "read line; echo got:$line"], stdin=True)
    sock = api.exec_start(exec_id, socket=True)
    try:
        raw_sock(sock).sendall(b"ping\n")
        raw_sock(sock).shutdown(socket.SHUT_WR)
        assert read_frames(sock) == [(1, b"got:ping\n")]
    finally:
        sock.close()


def detach_exec(api, cid, keys):
    exec_id = api.exec_create(cid, "cat", stdin=True, tty=True, stdout=True)
    sock = api.exec_start(exec_id, tty=True, socket=True)
    for key in keys:
        raw_sock(sock).sendall(key)
        time.sleep(0.2)
    return exec_id, sock


def test_exec_detaches_on_ctrl_p_ctrl_q_and_keeps_running(api, running):
    cid = running()
    exec_id, sock = detach_exec(api, cid, [CTRL_P, CTRL_Q])
    try:
        assert_detached(sock)
    finally:
        sock.close()
    assert api.exec_inspect(exec_id)["Running"] is True
    assert api.inspect_container(cid)["State"]["Running"] is True


def test_exec_detach_keys_from_client_config(api, running):
    api._general_configs["detachKeys"] = "ctrl-x"
    cid = running()
    exec_id, sock = detach_exec(api, cid, [CTRL_P, CTRL_Q, CTRL_X])
    try:
        assert_detached(sock)
    finally:
        sock.close()
    assert api.exec_inspect(exec_id)["DetachKeys"] == "ctrl-x"
    assert api.exec_inspect(exec_id)["Running"] is True


def test_exec_passes_a_false_start_of_the_sequence_through(api, running):
    cid = running()
    exec_id = api.exec_create(cid, "cat", stdin=True, tty=True)
    sock = api.exec_start(exec_id, tty=True, socket=True)
    try:
        s = raw_sock(sock)
        s.sendall(b"a" + CTRL_P)
        time.sleep(0.2)
        s.sendall(b"b\n")
        s.settimeout(10)
        seen = b""
        while b"b\r\n" not in seen or seen.count(b"b") < 2:
            seen += s.recv(4096)
        # The tty echoes the input and cat writes it back: ^P reached it.
        assert b"a^Pb" in seen
    finally:
        sock.close()


def test_invalid_exec_detach_keys_are_a_400(api, running):
    cid = running()
    with pytest.raises(docker.errors.APIError) as err:
        api.exec_create(cid, "cat", tty=True, detach_keys="ctrl-1")
    assert err.value.status_code == 400
    assert "Invalid escape keys (ctrl-1) provided" in str(err.value)


def attach_tty(api, running, params):
    cid = running(tty=True)
    sock = api.attach_socket(cid, params)
    return cid, sock


def test_attach_detaches_on_default_keys(api, running):
    cid, sock = attach_tty(api, running, {"stdin": 1, "stream": 1})
    try:
        raw_sock(sock).sendall(CTRL_P)
        time.sleep(0.2)
        raw_sock(sock).sendall(CTRL_Q)
        assert_detached(sock)
    finally:
        sock.close()
    time.sleep(0.3)
    assert api.inspect_container(cid)["State"]["Running"] is True


def test_attach_detach_keys_from_query(api, running):
    cid, sock = attach_tty(api, running, {"stdin": 1, "stream": 1, "detachKeys": "ctrl-x"})
    try:
        raw_sock(sock).sendall(CTRL_X)
        assert_detached(sock)
    finally:
        sock.close()
    assert api.inspect_container(cid)["State"]["Running"] is True


def test_attach_without_tty_passes_the_sequence_to_the_process(api, running):
    cid = running()
    sock = api.attach_socket(cid, {"stdin": 1, "stdout": 1, "stream": 1})
    try:
        raw_sock(sock).sendall(CTRL_P + CTRL_Q + b"hi\n")
        raw_sock(sock).settimeout(10)
        stream, size = next_frame_header(raw_sock(sock))
        assert (stream, read_exactly(raw_sock(sock), size)) == (1, CTRL_P + CTRL_Q + b"hi\n")
    finally:
        sock.close()


def test_invalid_attach_detach_keys_are_a_400(api, running):
    cid = running(tty=True)
    with pytest.raises(docker.errors.APIError) as err:
        api.attach_socket(cid, {"stdin": 1, "stream": 1, "detachKeys": "ctrl-1"})
    assert err.value.status_code == 400


# dockerd's upgrade rules (group 13): 101 only for Connection: Upgrade +
# Upgrade: tcp; any other client gets 200 and the stream as the body.


def unix_path():
    host = os.environ["DOCKER_HOST"]
    assert host.startswith("unix://"), host
    return host[len("unix://"):]


def http(method, path, body=b"", headers=()):
    """One request on a fresh connection; returns (head lines, rest)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(unix_path())
    s.settimeout(10)
    lines = [f"{method} {path} HTTP/1.1", "Host: docker", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, f"connection closed before the response head: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        rest += chunk
    s.close()
    return head.decode().split("\r\n"), rest


def header(head, name):
    for line in head[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def dechunk(body):
    out = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out
        out += body[:n]
        body = body[n + 2:]
    return out


def test_exec_start_without_upgrade_answers_200_with_the_stream(api, running):
    cid = running()
    exec_id = api.exec_create(cid, ["echo", "plain"])["Id"]
    head, body = http("POST", f"/v1.43/exec/{exec_id}/start",
                      json.dumps({"Detach": False, "Tty": False}).encode(),
                      [("Content-Type", "application/json")])
    assert head[0].startswith("HTTP/1.1 200"), head
    assert header(head, "Content-Type") == "application/vnd.docker.multiplexed-stream"
    payload = dechunk(body) if header(head, "Transfer-Encoding") == "chunked" else body
    assert payload == b"\x01\x00\x00\x00\x00\x00\x00\x06plain\n"
    assert api.exec_inspect(exec_id)["ExitCode"] == 0


def test_exec_start_with_upgrade_answers_101(api, running):
    cid = running()
    exec_id = api.exec_create(cid, ["echo", "up"], tty=True)["Id"]
    head, body = http("POST", f"/v1.43/exec/{exec_id}/start",
                      json.dumps({"Detach": False, "Tty": True}).encode(),
                      [("Content-Type", "application/json"),
                       ("Connection", "Upgrade"), ("Upgrade", "tcp")])
    assert head[0].startswith("HTTP/1.1 101"), head
    assert header(head, "Content-Type") == "application/vnd.docker.raw-stream"
    assert body == b"up\r\n"


def test_attach_without_upgrade_answers_200_with_the_stream(api, cleanup):
    c = api.create_container(IMAGE, ["sh", "-c", "sleep 0.5; echo attached"])
    cleanup["containers"].append(c["Id"])
    result = {}

    def attach():
        result["response"] = http("POST", f"/v1.43/containers/{c['Id']}/attach?stream=1&stdout=1")

    t = threading.Thread(target=attach)
    t.start()
    time.sleep(0.3)
    api.start(c)
    t.join(20)
    head, body = result["response"]
    assert head[0].startswith("HTTP/1.1 200"), head
    assert header(head, "Content-Type") == "application/vnd.docker.multiplexed-stream"
    payload = dechunk(body) if header(head, "Transfer-Encoding") == "chunked" else body
    assert payload == b"\x01\x00\x00\x00\x00\x00\x00\x09attached\n"


def test_attach_with_logs_and_no_stream_replays_and_ends(api, cleanup):
    c = api.create_container(IMAGE, ["sh", "-c", "echo out; echo err >&2"])
    cleanup["containers"].append(c["Id"])
    api.start(c)
    api.wait(c)
    assert api.attach(c, stream=False, logs=True, stderr=False) == b"out\n"
    assert api.attach(c, stream=False, logs=True) in (b"out\nerr\n", b"err\nout\n")
    # Without logs and stream there is nothing to send: the attach ends.
    assert api.attach(c, stream=False, logs=False) == b""
