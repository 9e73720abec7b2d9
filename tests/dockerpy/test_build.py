"""Build options with docker-py as the client (issue 12, group 8): target,
cache_from, extra_hosts, network_mode, a Dockerfile inside the context, and
build errors in the stream as dockerd reports them."""
import io
import os
import tarfile
import tempfile

import docker
import pytest

from conftest import IMAGE, unique


def dockerfile(*lines):
    return io.BytesIO("\n".join(lines).encode())


def build(api, cleanup, script, **kwargs):
    tag = kwargs.pop("tag", None) or unique("dpy-build")
    cleanup["images"].append(tag)
    if isinstance(script, io.BytesIO):
        script.seek(0)
        kwargs["fileobj"] = script
    return tag, list(api.build(tag=tag, decode=True, rm=True, **kwargs))


def output_of(api, cleanup, image, cmd):
    """stdout of `cmd` run in `image` (create, start, wait, logs)."""
    c = api.create_container(image, cmd)
    cleanup["containers"].append(c["Id"])
    api.start(c)
    assert api.wait(c)["StatusCode"] == 0
    return api.logs(c, stderr=False)


def text(lines):
    return "".join(line.get("stream", "") for line in lines)


def test_target_builds_only_up_to_the_named_stage(api, cleanup):
    script = dockerfile(
        f"FROM {IMAGE} AS first",
        "RUN touch /first",
        "LABEL stage=first",
        f"FROM {IMAGE}",
        "RUN touch /second",
        "LABEL stage=second",
    )
    tag, lines = build(api, cleanup, script, target="first")
    assert "errorDetail" not in lines[-1], lines[-1]
    assert api.inspect_image(tag)["Config"]["Labels"]["stage"] == "first"
    assert "touch /second" not in text(lines)
    _, lines = build(api, cleanup, script, target="nosuchstage")
    assert lines[-1]["error"] == "failed to reach build target nosuchstage in Dockerfile"


def count_cache_hits(lines):
    return sum("Using cache" in line.get("stream", "") for line in lines)


def test_cache_from_limits_cache_hits_to_the_named_images(api, cleanup):
    script = dockerfile(f"FROM {IMAGE}", "ENV FOO=bar", f"RUN echo {unique('x')} > /x", "RUN touch /y")
    first, _ = build(api, cleanup, script)
    _, lines = build(api, cleanup, script, cache_from=[first])
    assert count_cache_hits(lines) == 3
    _, lines = build(api, cleanup, script, cache_from=["nosuchimage"])
    assert count_cache_hits(lines) == 0
    _, lines = build(api, cleanup, script)
    assert count_cache_hits(lines) == 3


def test_extra_hosts_reach_run_steps(api, cleanup):
    script = dockerfile(f"FROM {IMAGE}", "RUN cp /etc/hosts /hosts-file")
    tag, lines = build(api, cleanup, script, nocache=True,
                       extra_hosts={"extra.test": "127.0.0.1", "other.test": "10.1.2.3"})
    assert "errorDetail" not in lines[-1], lines[-1]
    hosts = output_of(api, cleanup, tag, "cat /hosts-file").decode()
    assert "127.0.0.1\textra.test" in hosts
    assert "10.1.2.3\tother.test" in hosts


def test_network_mode_none_and_a_user_network(api, cleanup):
    script = dockerfile(f"FROM {IMAGE}", 'RUN test "$(ls /sys/class/net)" = lo')
    _, lines = build(api, cleanup, script, network_mode="none", nocache=True)
    assert "errorDetail" not in lines[-1], lines[-1]
    _, lines = build(api, cleanup, script, nocache=True)
    assert lines[-1]["errorDetail"]["code"] == 1
    net = unique("dpy-buildnet")
    api.create_network(net)
    cleanup["networks"].append(net)
    script = dockerfile(f"FROM {IMAGE}", "RUN ip -4 addr show eth0 | grep -q 'inet '")
    _, lines = build(api, cleanup, script, network_mode=net, nocache=True)
    assert "errorDetail" not in lines[-1], lines[-1]


def context_tar(files):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    data.seek(0)
    return data


def test_dockerfile_path_inside_the_context(api, cleanup):
    base = tempfile.mkdtemp()
    os.makedirs(os.path.join(base, "sub", "dir"))
    with open(os.path.join(base, "file.txt"), "w") as f:
        f.write("hello")
    with open(os.path.join(base, "sub", "dir", "custom.dockerfile"), "w") as f:
        f.write(f"FROM {IMAGE}\nCOPY . /src\nWORKDIR /src\n")
    tag, lines = build(api, cleanup, None, path=base, dockerfile="sub/dir/custom.dockerfile")
    assert "Successfully tagged" in lines[-1]["stream"], lines[-1]
    listing = output_of(api, cleanup, tag, "ls").split()
    assert sorted(listing) == [b"file.txt", b"sub"]
    # The same through a custom context tar with `dockerfile=` a nested path.
    ctx = context_tar({"a/b/Dockerfile": f"FROM {IMAGE}\nLABEL nested=yes\n".encode()})
    tag, lines = build(api, cleanup, None, fileobj=ctx, custom_context=True,
                       dockerfile="a/b/Dockerfile")
    assert api.inspect_image(tag)["Config"]["Labels"]["nested"] == "yes"
    _, lines = build(api, cleanup, None, fileobj=context_tar({"x": b""}), custom_context=True,
                     dockerfile="../outside")
    assert "errorDetail" in lines[-1]


def test_failed_run_is_reported_in_the_stream_with_its_code(api, client, cleanup):
    script = dockerfile(f"FROM {IMAGE}", "RUN echo before; exit 3")
    tag, lines = build(api, cleanup, script, nocache=True)
    last = lines[-1]
    message = "The command '/bin/sh -c echo before; exit 3' returned a non-zero code: 3"
    assert last == {"errorDetail": {"code": 3, "message": message}, "error": message}
    assert "before\n" in text(lines)
    with pytest.raises(docker.errors.ImageNotFound):
        api.inspect_image(tag)
    with pytest.raises(docker.errors.BuildError) as err:
        client.images.build(fileobj=dockerfile(f"FROM {IMAGE}", "RUN exit 7"), nocache=True)
    assert "returned a non-zero code: 7" in str(err.value)


def test_parse_errors_are_reported_in_the_stream(api, cleanup):
    _, lines = build(api, cleanup, dockerfile(f"FROM {IMAGE}", "NOSUCHINSTRUCTION x"))
    assert "errorDetail" in lines[-1]
    assert lines[-1]["error"] == lines[-1]["errorDetail"]["message"]


def test_run_stderr_is_marked_red_in_the_stream(api, cleanup):
    script = dockerfile(f"FROM {IMAGE}", "RUN echo to-stderr >&2")
    _, lines = build(api, cleanup, script, nocache=True)
    assert "\x1b[91mto-stderr\n\x1b[0m" in [line.get("stream") for line in lines]
