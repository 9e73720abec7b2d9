"""Image load and list with docker-py as the client (issue 12, group 9):
`POST /images/load` streams chunked JSON progress (one message per image),
`GET /images/json` has one entry per image ID with all its tags."""
import docker
import pytest

from conftest import IMAGE, unique


def second_image(api, cleanup, tag):
    """An image other than busybox (a commit), tagged `tag`."""
    c = api.create_container(IMAGE, ["touch", "/marker"])
    cleanup["containers"].append(c["Id"])
    api.start(c)
    api.wait(c)
    repo, _, version = tag.partition(":")
    image_id = api.commit(c, repository=repo, tag=version)["Id"]
    cleanup["images"].append(tag)
    return image_id


def test_load_of_a_multi_image_archive_streams_one_message_per_image(api, client, cleanup):
    one = unique("dpy-load-one") + ":v1"
    two = unique("dpy-load-two") + ":v2"
    api.tag(IMAGE, *one.split(":"))
    cleanup["images"].append(one)
    second_image(api, cleanup, two)
    saved = api._get(api._url("/images/get"), params={"names": [one, two]}, stream=True)
    api._raise_for_status(saved)
    archive = saved.content
    api.remove_image(one)
    api.remove_image(two)

    response = api._post(api._url("/images/load"), data=archive, stream=True)
    api._raise_for_status(response)
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert response.headers.get("Content-Type") == "application/json"
    messages = list(api._stream_helper(response, decode=True))
    assert sorted(messages, key=str) == sorted(
        [{"stream": f"Loaded image: {one}\n"}, {"stream": f"Loaded image: {two}\n"}], key=str
    )
    api.remove_image(one)
    api.remove_image(two)

    # The high-level API parses the same stream ("Extra data" before).
    loaded = client.images.load(archive)
    assert len(loaded) == 2
    assert {one, two} <= {t for image in loaded for t in image.tags}


def test_load_error_is_the_last_message(client):
    with pytest.raises(docker.errors.ImageLoadError):
        client.images.load(b"this is not a tar archive")


def test_list_has_one_entry_per_image_with_all_its_tags(api, cleanup):
    extra = [unique("dpy-list") + ":a", unique("dpy-list") + ":b"]
    for tag in extra:
        api.tag(IMAGE, *tag.split(":"))
        cleanup["images"].append(tag)
    image_id = api.inspect_image(IMAGE)["Id"]
    entries = [e for e in api.images() if e["Id"] == image_id]
    assert len(entries) == 1, entries
    assert set(extra) | {IMAGE} <= set(entries[0]["RepoTags"])
    ids = [e["Id"] for e in api.images(all=True)]
    assert len(ids) == len(set(ids))
