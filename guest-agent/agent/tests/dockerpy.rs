//! Regression tests written with docker-py (PyPI `docker` 7.2.0) as the
//! client, for the contracts issue 12 found broken: exec/attach streams and
//! upgrade rules, archive routes, build options, image load and list. Each
//! test starts a native engine with `busybox:latest` and runs one pytest
//! file of `tests/dockerpy/` against it.
//!
//! The venv is `target/dockerpy-venv` (made by `scripts/install-deps.sh`),
//! or `BERTH_DOCKERPY_VENV`.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_test_support::engine::{NativeEngine, tail};
use berth_test_support::images;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("BERTH_DOCKERPY_VENV")
        .map_or_else(|| workspace().join("target/dockerpy-venv"), PathBuf::from);
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no docker-py venv at {} (run scripts/install-deps.sh, or set BERTH_DOCKERPY_VENV)",
        venv.display()
    );
    python
}

/// Runs `tests/dockerpy/<file>` against a fresh engine; fails with pytest's
/// output and the agent's log tail.
fn pytest(file: &str) {
    let python = venv_python();
    let engine = NativeEngine::start(Path::new(env!("CARGO_BIN_EXE_berth-agent")));
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    let config = engine.dir.path().join("dockerpy-config");
    std::fs::create_dir_all(&config).expect("creating an empty docker config dir");
    let dir = workspace().join("tests/dockerpy");
    let out = Command::new(&python)
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE"])
        .arg(file)
        .current_dir(&dir)
        .env("DOCKER_HOST", engine.docker_host())
        .env("DOCKER_CONFIG", &config)
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {} -m pytest: {e}", python.display()));
    assert!(
        out.status.success(),
        "pytest {file} failed ({}):\n{}\n{}\nagent log tail:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&engine.log(), 60),
    );
}

#[test]
fn dockerpy_exec_and_attach_streams() {
    pytest("test_streams.py");
}

#[test]
fn dockerpy_archive_routes() {
    pytest("test_archive.py");
}

#[test]
fn dockerpy_build_options() {
    pytest("test_build.py");
}

#[test]
fn dockerpy_image_load_and_list() {
    pytest("test_images.py");
}
