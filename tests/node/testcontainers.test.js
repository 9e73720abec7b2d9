// Testcontainers for Node (a real client of alternative engines, not ours)
// driving berth's engine: DOCKER_HOST names the engine's socket. Run by
// guest-agent/agent/tests/testcontainers.rs (native engine, in its netns)
// and tests/e2e/tests/testcontainers.rs (through the VM). Ryuk stays off
// (TESTCONTAINERS_RYUK_DISABLED): its image cannot be built offline.
// Images: `busybox:latest`, loaded by the harness before the run.

"use strict";

const { test, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const http = require("node:http");
const { GenericContainer, Network, Wait } = require("testcontainers");

const BUSYBOX = "busybox:latest";
const started = [];

function track(container) {
  started.push(container);
  return container;
}

after(async () => {
  for (const c of started) {
    await c.stop({ timeout: 1 }).catch(() => {});
  }
});

function get(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = "";
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode, body }));
      })
      .on("error", reject);
  });
}

function httpd(root = "/www") {
  return new GenericContainer(BUSYBOX)
    .withCommand(["sh", "-c", `mkdir -p ${root} && echo hello-berth > ${root}/index.html && exec httpd -f -p 8080 -h ${root}`])
    .withExposedPorts(8080);
}

test("log message wait strategy", async () => {
  const c = track(
    await new GenericContainer(BUSYBOX)
      .withCommand(["sh", "-c", "echo starting; sleep 0.3; echo ready-now; exec sleep 1000"])
      .withWaitStrategy(Wait.forLogMessage("ready-now"))
      .start(),
  );
  assert.match(c.getId(), /^[0-9a-f]{64}$/);
});

test("listening ports wait strategy and a published port", async () => {
  const c = track(await httpd().withWaitStrategy(Wait.forListeningPorts()).start());
  const res = await get(`http://${c.getHost()}:${c.getMappedPort(8080)}/`);
  assert.equal(res.status, 200);
  assert.equal(res.body.trim(), "hello-berth");
});

test("HTTP wait strategy", async () => {
  const c = track(await httpd().withWaitStrategy(Wait.forHttp("/", 8080).forStatusCode(200)).start());
  assert.ok(c.getMappedPort(8080) > 0);
});

test("health check wait strategy", async () => {
  const c = track(
    await new GenericContainer(BUSYBOX)
      .withCommand(["sh", "-c", "sleep 1; touch /tmp/healthy; exec sleep 1000"])
      .withHealthCheck({
        test: ["CMD-SHELL", "test -f /tmp/healthy"],
        interval: 250,
        timeout: 1000,
        retries: 20,
        startPeriod: 0,
      })
      .withWaitStrategy(Wait.forHealthCheck())
      .start(),
  );
  const { exitCode } = await c.exec(["test", "-f", "/tmp/healthy"]);
  assert.equal(exitCode, 0);
});

test("successful command wait strategy", async () => {
  const c = track(
    await new GenericContainer(BUSYBOX)
      .withCommand(["sh", "-c", "sleep 0.5; touch /tmp/ready; exec sleep 1000"])
      .withWaitStrategy(Wait.forSuccessfulCommand("test -f /tmp/ready"))
      .start(),
  );
  assert.ok(c.getId());
});

test("exec: output, error and exit code", async () => {
  const c = track(await new GenericContainer(BUSYBOX).withCommand(["sleep", "1000"]).start());
  const result = await c.exec(["sh", "-c", "echo out; echo err >&2; exit 3"]);
  assert.equal(result.exitCode, 3);
  assert.equal(result.stdout, "out\n");
  assert.equal(result.stderr, "err\n");
  const env = await c.exec(["sh", "-c", "echo $GREETING"], { env: { GREETING: "hi-exec" } });
  assert.equal(env.output.trim(), "hi-exec");
});

test("copy content in and an archive out", async () => {
  const c = track(
    await new GenericContainer(BUSYBOX)
      .withCopyContentToContainer([{ content: "copied-before-start\n", target: "/etc/before.txt" }])
      .withCommand(["sleep", "1000"])
      .start(),
  );
  await c.copyContentToContainer([{ content: "copied-while-running\n", target: "/tmp/during.txt" }]);
  const before = await c.exec(["cat", "/etc/before.txt"]);
  assert.equal(before.output, "copied-before-start\n");
  const stream = await c.copyArchiveFromContainer("/tmp/during.txt");
  const chunks = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk));
  const tar = Buffer.concat(chunks);
  assert.equal(tar.length % 512, 0, "a tar archive is a multiple of 512 bytes");
  assert.equal(tar.subarray(0, 10).toString().replace(/\0.*$/, ""), "during.txt");
  assert.ok(tar.includes("copied-while-running\n"));
});

test("a network with aliases", async () => {
  const network = await new Network().start();
  try {
    const server = track(await httpd().withNetwork(network).withNetworkAliases("web-alias").start());
    const client = track(await new GenericContainer(BUSYBOX).withNetwork(network).withCommand(["sleep", "1000"]).start());
    const viaAlias = await client.exec(["wget", "-qO-", "http://web-alias:8080/"]);
    assert.equal(viaAlias.exitCode, 0, viaAlias.output);
    assert.equal(viaAlias.output.trim(), "hello-berth");
    const ip = server.getIpAddress(network.getName());
    const viaIp = await client.exec(["wget", "-qO-", `http://${ip}:8080/`]);
    assert.equal(viaIp.output.trim(), "hello-berth");
    await client.stop({ timeout: 1 });
    await server.stop({ timeout: 1 });
  } finally {
    await network.stop();
  }
});

test("bind mounts and tmpfs", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-tc-"));
  fs.writeFileSync(path.join(dir, "from-host.txt"), "host-data\n");
  const c = track(
    await new GenericContainer(BUSYBOX)
      .withBindMounts([{ source: dir, target: "/data", mode: "rw" }])
      .withTmpFs({ "/scratch": "rw,size=1m" })
      .withCommand(["sleep", "1000"])
      .start(),
  );
  const read = await c.exec(["cat", "/data/from-host.txt"]);
  assert.equal(read.output, "host-data\n");
  const write = await c.exec(["sh", "-c", "echo container-data > /data/from-container.txt"]);
  assert.equal(write.exitCode, 0, write.output);
  assert.equal(fs.readFileSync(path.join(dir, "from-container.txt"), "utf8"), "container-data\n");
  const tmpfs = await c.exec(["sh", "-c", "grep ' /scratch ' /proc/mounts"]);
  assert.match(tmpfs.output, /^tmpfs \/scratch tmpfs rw/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("restart and stop", async () => {
  const c = await new GenericContainer(BUSYBOX)
    .withCommand(["sh", "-c", "echo boot; exec sleep 1000"])
    .withWaitStrategy(Wait.forLogMessage("boot"))
    .start();
  await c.exec(["touch", "/tmp/kept"]);
  await c.restart({ timeout: 1 });
  const kept = await c.exec(["test", "-f", "/tmp/kept"]);
  assert.equal(kept.exitCode, 0, "the container's file system survives a restart");
  const stopped = await c.stop({ timeout: 1 });
  assert.equal(stopped.getId(), c.getId());
});

test("build an image from a Dockerfile, then commit a container", async () => {
  const ctx = fs.mkdtempSync(path.join(os.tmpdir(), "berth-tc-build-"));
  fs.writeFileSync(path.join(ctx, "payload.txt"), "from-context\n");
  fs.writeFileSync(
    path.join(ctx, "Dockerfile"),
    `FROM ${BUSYBOX}\nCOPY payload.txt /payload.txt\nRUN echo built > /built\nCMD ["sh", "-c", "cat /built /payload.txt; exec sleep 1000"]\n`,
  );
  const image = await GenericContainer.fromDockerfile(ctx).build("berth-tc-built:1", { deleteOnExit: false });
  const c = track(await image.withWaitStrategy(Wait.forLogMessage("from-context")).start());
  await c.exec(["sh", "-c", "echo committed > /committed"]);
  const committed = await c.commit({ repo: "berth-tc-committed", tag: "1", deleteOnExit: false });
  assert.match(committed, /^sha256:[0-9a-f]{64}$|^[0-9a-f]{64}$/);
  const fromCommit = track(await new GenericContainer("berth-tc-committed:1").withCommand(["sleep", "1000"]).start());
  const out = await fromCommit.exec(["cat", "/committed", "/built"]);
  assert.equal(out.output, "committed\nbuilt\n");
  fs.rmSync(ctx, { recursive: true, force: true });
});

test("logs of a container", async () => {
  const c = track(
    await new GenericContainer(BUSYBOX)
      .withCommand(["sh", "-c", "echo line-one; echo line-two >&2; exec sleep 1000"])
      .withWaitStrategy(Wait.forLogMessage("line-two"))
      .start(),
  );
  const stream = await c.logs();
  const seen = await new Promise((resolve, reject) => {
    let text = "";
    stream.on("data", (chunk) => {
      text += chunk.toString();
      if (text.includes("line-one") && text.includes("line-two")) {
        stream.destroy();
        resolve(text);
      }
    });
    stream.on("error", reject);
  });
  assert.match(seen, /line-one/);
});

test("ten parallel starts", async () => {
  const containers = await Promise.all(
    Array.from({ length: 10 }, (_, i) =>
      new GenericContainer(BUSYBOX)
        .withCommand(["sh", "-c", `echo parallel-${i}; exec sleep 1000`])
        .withWaitStrategy(Wait.forLogMessage(`parallel-${i}`))
        .start(),
    ),
  );
  assert.equal(new Set(containers.map((c) => c.getId())).size, 10);
  await Promise.all(containers.map((c) => c.stop({ timeout: 1 })));
});
