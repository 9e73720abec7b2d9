//! The legacy builder (`DOCKER_BUILDKIT=0 docker build`) and commit,
//! export, import and diff, driven by the real docker CLI (engine issue 3).

use std::path::Path;
use std::process::Output;

use berth_test_support::engine::NativeEngine;
use berth_test_support::images;

fn engine() -> NativeEngine {
    let engine = NativeEngine::start(Path::new(env!("CARGO_BIN_EXE_berth-agent")));
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    engine
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// `docker build` with the legacy builder.
fn build(engine: &NativeEngine, args: &[&str]) -> Output {
    let mut full = vec!["build"];
    full.extend_from_slice(args);
    engine
        .docker_cmd(&full)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("running docker build")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A build context with a Dockerfile using COPY, RUN, ENV, WORKDIR, CMD.
const DOCKERFILE: &str = "\
# a comment
FROM busybox
ARG WHO=nobody
ENV GREETING=hello
WORKDIR /app
COPY greeting.txt ./
COPY sub/ /app/sub/
RUN echo \"built for $WHO\" > /app/built.txt \\
    && echo running step
CMD [\"sh\", \"-c\", \"cat /app/greeting.txt /app/built.txt /app/sub/leaf; echo $GREETING; ls /app\"]
";

fn context(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.join("greeting.txt"), "from the context\n").unwrap();
    std::fs::write(dir.join("sub/leaf"), "leaf\n").unwrap();
    std::fs::write(dir.join("secret.txt"), "do not ship\n").unwrap();
    std::fs::write(dir.join(".dockerignore"), "secret.txt\n").unwrap();
}

#[test]
fn legacy_build_runs_copy_run_env_workdir_cmd_and_hits_the_cache() {
    let engine = engine();
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());

    let first = build(
        &engine,
        &["-t", "t1", "--build-arg", "WHO=berth", s(ctx.path())],
    );
    assert!(first.status.success(), "build failed: {}", text(&first));
    let log = text(&first);
    assert!(log.contains("Step 1/8 : FROM busybox"), "{log}");
    assert!(
        log.contains("\nrunning step\n"),
        "RUN output missing: {log}"
    );
    assert!(log.contains("Successfully tagged t1:latest"), "{log}");

    let history = engine.docker_ok(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", "t1"]);
    assert!(history.contains("built for"), "{history}");
    let out = engine.docker_ok(&["run", "--rm", "t1"]);
    assert_eq!(
        out,
        "from the context\nbuilt for berth\nleaf\nhello\nbuilt.txt\ngreeting.txt\nsub\n"
    );

    let second = build(
        &engine,
        &["-t", "t1", "--build-arg", "WHO=berth", s(ctx.path())],
    );
    assert!(second.status.success(), "rebuild failed: {}", text(&second));
    let log = text(&second);
    assert!(log.contains("Using cache"), "no cache hit: {log}");
    assert!(!log.contains("Running in"), "RUN ran again: {log}");
    assert_eq!(
        engine.docker_ok(&["ps", "-aq"]),
        "",
        "build left containers behind"
    );
    let listed = engine.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        !listed.contains("<none>"),
        "intermediate images are listed:\n{listed}"
    );
    engine.docker_ok(&["image", "prune", "-f"]);
    let third = build(
        &engine,
        &["-t", "t1", "--build-arg", "WHO=berth", s(ctx.path())],
    );
    assert!(
        text(&third).contains("Using cache"),
        "prune dropped the build cache: {}",
        text(&third)
    );
}

#[test]
fn legacy_build_honours_dockerignore_and_reports_failures() {
    let engine = engine();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("secret.txt"), "do not ship\n").unwrap();
    std::fs::write(ctx.path().join(".dockerignore"), "secret.txt\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY secret.txt /\n",
    )
    .unwrap();
    let ignored = build(&engine, &["-t", "t2", s(ctx.path())]);
    assert!(!ignored.status.success());
    assert!(
        text(&ignored).contains("excluded by .dockerignore"),
        "{}",
        text(&ignored)
    );

    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo before\nRUN false\nCMD true\n",
    )
    .unwrap();
    let failed = build(&engine, &["-t", "t3", s(ctx.path())]);
    assert!(!failed.status.success());
    let log = text(&failed);
    assert!(log.contains("Step 3/4 : RUN false"), "{log}");
    assert!(
        log.contains("The command '/bin/sh -c false' returned a non-zero code: 1"),
        "{log}"
    );
    assert_eq!(
        engine.docker_ok(&["ps", "-aq"]),
        "",
        "failed build left containers behind"
    );
}

#[test]
fn commit_turns_a_containers_changes_into_an_image() {
    let engine = engine();
    engine.docker_ok(&[
        "run",
        "--name",
        "writer",
        "busybox",
        "sh",
        "-c",
        "echo committed > /data.txt && rm /etc/group",
    ]);
    engine.docker_ok(&[
        "commit",
        "--change",
        "CMD [\"cat\", \"/data.txt\"]",
        "writer",
        "committed:v1",
    ]);
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "committed:v1"]),
        "committed\n"
    );
    let deleted = engine
        .docker_cmd(&["run", "--rm", "committed:v1", "ls", "/etc/group"])
        .output()
        .unwrap();
    assert!(!deleted.status.success(), "the whiteout was not committed");
}

#[test]
fn diff_lists_added_changed_and_deleted_paths() {
    let engine = engine();
    engine.docker_ok(&[
        "run",
        "--name",
        "changer",
        "busybox",
        "sh",
        "-c",
        "mkdir /newdir && echo x > /newdir/f && echo y >> /etc/passwd && rm /etc/group",
    ]);
    let diff = engine.docker_ok(&["diff", "changer"]);
    let lines: Vec<&str> = diff.lines().collect();
    for expected in [
        "A /newdir",
        "A /newdir/f",
        "C /etc",
        "C /etc/passwd",
        "D /etc/group",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected} missing from:\n{diff}"
        );
    }
}

#[test]
fn export_and_import_round_trip_a_root_file_system() {
    let engine = engine();
    engine.docker_ok(&[
        "run",
        "--name",
        "exported",
        "busybox",
        "sh",
        "-c",
        "echo exported > /marker",
    ]);
    let tar = engine.dir.path().join("export.tar");
    engine.docker_ok(&["export", "-o", s(&tar), "exported"]);
    let listing = std::process::Command::new("tar")
        .args(["-tf", s(&tar)])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l == "marker"), "{listing}");
    assert!(listing.lines().any(|l| l == "bin/busybox"), "{listing}");

    engine.docker_ok(&[
        "import",
        "--change",
        "CMD [\"cat\", \"/marker\"]",
        s(&tar),
        "imported:v1",
    ]);
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "imported:v1"]),
        "exported\n"
    );
}

#[test]
fn diff_of_an_untouched_container_is_empty() {
    let engine = engine();
    engine.docker_ok(&["run", "--name", "idle", "busybox", "true"]);
    assert_eq!(engine.docker_ok(&["diff", "idle"]), "");
}

#[test]
fn multi_stage_build_copies_from_an_earlier_stage() {
    let engine = engine();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS maker\nRUN mkdir /out && echo staged > /out/result\n\
         FROM busybox\nCOPY --from=maker /out/result /result\nCMD [\"cat\", \"/result\"]\n",
    )
    .unwrap();
    let built = build(&engine, &["-t", "multi", s(ctx.path())]);
    assert!(built.status.success(), "build failed: {}", text(&built));
    assert_eq!(engine.docker_ok(&["run", "--rm", "multi"]), "staged\n");
}

#[test]
fn copy_resolves_context_symlinks_inside_the_context() {
    let engine = engine();
    let ctx = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/", ctx.path().join("escape")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY escape/etc/os-release /leak\n",
    )
    .unwrap();
    let built = build(&engine, &["-t", "leak", s(ctx.path())]);
    assert!(
        !built.status.success(),
        "a context symlink reached the guest's files: {}",
        text(&built)
    );
    assert!(
        text(&built).contains("file not found in build context"),
        "{}",
        text(&built)
    );
}

#[test]
fn from_an_unknown_image_fails_with_the_pull_error() {
    let engine = engine();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM 127.0.0.1:1/nothing/here\n",
    )
    .unwrap();
    let built = build(&engine, &["-t", "nope", s(ctx.path())]);
    assert!(!built.status.success());
    assert!(
        text(&built).contains("127.0.0.1:1/nothing/here"),
        "{}",
        text(&built)
    );
}

#[test]
fn add_extracts_local_archives_and_copy_chown_sets_owners() {
    let engine = engine();
    let ctx = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    std::fs::create_dir(staging.path().join("pkg")).unwrap();
    std::fs::write(staging.path().join("pkg/inside"), "unpacked\n").unwrap();
    let tarred = std::process::Command::new("tar")
        .args([
            "-czf",
            s(&ctx.path().join("pkg.tar.gz")),
            "-C",
            s(staging.path()),
            "pkg",
        ])
        .status()
        .unwrap();
    assert!(tarred.success());
    std::fs::write(ctx.path().join("owned.txt"), "mine\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nADD pkg.tar.gz /opt/\nCOPY --chown=1000:2000 owned.txt /home/\n\
         CMD [\"sh\", \"-c\", \"cat /opt/pkg/inside; stat -c %u:%g /home/owned.txt; stat -c %a /tmp\"]\n",
    )
    .unwrap();
    let built = build(&engine, &["-t", "added", s(ctx.path())]);
    assert!(built.status.success(), "build failed: {}", text(&built));
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "added"]),
        "unpacked\n1000:2000\n1777\n"
    );
}

#[test]
fn commit_of_a_running_container_pauses_it_and_keeps_it_running() {
    let engine = engine();
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "echo live > /state && sleep 1000",
    ]);
    engine.docker_ok(&["exec", "live", "cat", "/state"]);
    engine.docker_ok(&["commit", "live", "snapshot:v1"]);
    assert_eq!(
        engine.docker_ok(&["inspect", "-f", "{{.State.Status}}", "live"]),
        "running\n"
    );
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "snapshot:v1", "cat", "/state"]),
        "live\n"
    );
}

#[test]
fn a_dockerfile_on_stdin_builds_without_a_context() {
    use std::io::Write as _;
    let engine = engine();
    let mut child = engine
        .docker_cmd(&["build", "-t", "stdin", "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM busybox\nCMD [\"echo\", \"from stdin\"]\n")
        .unwrap();
    let built = child.wait_with_output().unwrap();
    assert!(built.status.success(), "build failed: {}", text(&built));
    assert_eq!(engine.docker_ok(&["run", "--rm", "stdin"]), "from stdin\n");
}

#[test]
fn quiet_build_prints_only_the_image_id() {
    let engine = engine();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo noisy\nLABEL stage=quiet\n",
    )
    .unwrap();
    let built = build(&engine, &["-q", "-t", "quiet", s(ctx.path())]);
    assert!(built.status.success(), "build failed: {}", text(&built));
    let stdout = String::from_utf8_lossy(&built.stdout);
    assert!(stdout.starts_with("sha256:"), "{stdout}");
    assert!(!stdout.contains("noisy"), "{stdout}");
    assert_eq!(
        engine.docker_ok(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"stage\"}}",
            "quiet"
        ]),
        "quiet\n"
    );
}
