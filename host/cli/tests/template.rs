//! `berth template ...`, `berth validate`, `berth edit` and how `berth
//! start` treats templates before it boots anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn berth_in(home: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(cwd)
        .env("BERTH_HOME", home)
        .env("DOCKER_CONFIG", home.join("docker-config"))
        .env_remove("VISUAL")
        .env_remove("EDITOR")
        .output()
        .unwrap()
}

fn berth(home: &Path, args: &[&str]) -> Output {
    berth_in(home, home, args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn shipped(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../templates/{name}.yaml")),
    )
    .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// An instance as `berth start` leaves it, without booting: its stored
/// template and config.
fn fake_instance(home: &Path, name: &str, template: &str) -> PathBuf {
    let dir = home.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "template.yaml", template);
    write(
        &dir,
        "config.json",
        r#"{"driver":"qemu","cpus":1,"memory_mib":1024,"disk_gib":2}"#,
    );
    dir
}

const STORED: &str = "cpus: 1\nmemory: 1GiB\ndisk: 2GiB\nmounts: []\n";

#[test]
fn template_list_shows_each_shipped_template_with_its_description() {
    let home = tempfile::tempdir().unwrap();

    let out = berth(home.path(), &["template", "list"]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "NAME       DESCRIPTION\n\
         default    The Docker engine in a small Linux VM.\n\
         minimal    A bare Linux VM: no Docker engine, no socket forwarding, no mounts.\n\
         k3s        Single-node Kubernetes (https://k3s.io) next to the Docker engine.\n"
    );
}

#[test]
fn template_list_json_names_the_start_source() {
    let home = tempfile::tempdir().unwrap();

    let out = berth(home.path(), &["template", "list", "--json"]);

    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        rows[2],
        serde_json::json!({
            "name": "k3s",
            "source": "template:k3s",
            "description": "Single-node Kubernetes (https://k3s.io) next to the Docker engine."
        })
    );
    assert_eq!(rows.as_array().unwrap().len(), 3);
}

#[test]
fn template_show_prints_the_shipped_file() {
    let home = tempfile::tempdir().unwrap();

    let out = berth(home.path(), &["template", "show", "template:k3s"]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), shipped("k3s"));
}

#[test]
fn template_show_of_an_unknown_name_lists_the_known_ones() {
    let home = tempfile::tempdir().unwrap();

    let out = berth(home.path(), &["template", "show", "dockr"]);

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "berth: error: unknown template \"dockr\"; shipped templates: default, minimal, k3s\n"
    );
}

#[test]
fn template_copy_writes_berth_yaml_into_a_directory_and_never_overwrites() {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let dest = project.path().to_str().unwrap();

    let out = berth(home.path(), &["template", "copy", "minimal", dest]);

    assert!(out.status.success(), "{}", stderr(&out));
    let written = project.path().join("berth.yaml");
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        shipped("minimal")
    );
    let again = berth(home.path(), &["template", "copy", "k3s", dest]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains(&format!(
            "{} already exists; not overwriting it",
            written.display()
        )),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        shipped("minimal")
    );
}

#[test]
fn template_schema_is_a_json_schema_of_the_template_fields() {
    let home = tempfile::tempdir().unwrap();

    let out = berth(home.path(), &["template", "schema"]);

    assert!(out.status.success(), "{}", stderr(&out));
    let schema: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(schema["title"], "Template");
    let properties = schema["properties"].as_object().unwrap();
    for field in [
        "vmType",
        "memory",
        "mounts",
        "portForwards",
        "provision",
        "probes",
    ] {
        assert!(properties.contains_key(field), "{field} in {properties:?}");
    }
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn validate_accepts_each_shipped_template() {
    let home = tempfile::tempdir().unwrap();
    for name in ["default", "minimal", "k3s"] {
        let file = write(home.path(), &format!("{name}.yaml"), &shipped(name));

        let out = berth(home.path(), &["validate", file.to_str().unwrap()]);

        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("{}: valid\n", file.display()));
    }
}

#[test]
fn validate_points_at_a_decimal_size_with_line_column_and_excerpt() {
    let home = tempfile::tempdir().unwrap();
    let file = write(home.path(), "berth.yaml", "cpus: 2\nmemory: 4GB\n");

    let out = berth(home.path(), &["validate", file.to_str().unwrap()]);

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "berth: error: {}:2:9: error: memory: size \"4GB\" has an ambiguous unit \"GB\": use a binary unit (KiB, MiB, GiB, TiB), e.g. \"4GiB\" or \"512MiB\"\n  |\n2 | memory: 4GB\n  |         ^\n",
            file.display()
        )
    );
}

#[test]
fn template_validate_points_at_an_unknown_field() {
    let home = tempfile::tempdir().unwrap();
    let file = write(home.path(), "x.yaml", "cpus: 2\nmemroy: 4GiB\n");

    let out = berth(
        home.path(),
        &["template", "validate", file.to_str().unwrap()],
    );

    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("berth: error: {}:2:1: error: ", file.display())),
        "{err}"
    );
    assert!(err.contains("unknown field `memroy`"), "{err}");
    assert!(err.ends_with("2 | memroy: 4GiB\n  | ^\n"), "{err}");
}

#[test]
fn validate_of_a_missing_file_names_it() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("nope.yaml");

    let out = berth(home.path(), &["validate", file.to_str().unwrap()]);

    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "berth: error: failed to read template {}: ",
            file.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn start_with_an_invalid_berth_yaml_points_at_it_and_creates_nothing() {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let file = write(
        project.path(),
        "berth.yaml",
        "portForwards:\n  - guestPort: 80\n    hostPort: 70000\n",
    );

    let out = berth_in(home.path(), project.path(), &["start"]);

    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "berth: error: {}:3:15: error: portForwards[0].hostPort: port 70000 is out of range: ports are 1-65535\n",
            file.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::read_dir(home.path()).unwrap().next().is_none());
}

#[test]
fn start_with_out_of_range_cpus_flag_names_it_and_creates_nothing() {
    let home = tempfile::tempdir().unwrap();

    let out = berth(home.path(), &["start", "dev", "--cpus", "0"]);

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "berth: error: invalid --cpus, --memory or --disk: invalid config: cpus must be 1..=64, got 0\n"
    );
    assert!(!home.path().join("dev").exists());
}

#[test]
fn start_of_an_existing_instance_with_a_template_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let dir = fake_instance(home.path(), "k3s", STORED);

    let out = berth(home.path(), &["start", "template:k3s"]);

    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "instance k3s already exists; it keeps the template it was created with ({})",
            dir.join("template.yaml").display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn edit_saves_a_valid_change() {
    let home = tempfile::tempdir().unwrap();
    let dir = fake_instance(home.path(), "dev", STORED);

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["edit", "dev"])
        .env("BERTH_HOME", home.path())
        .env("EDITOR", "sed -i 's/^cpus: 1$/cpus: 2/'")
        .env_remove("VISUAL")
        .output()
        .unwrap();

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("template.yaml")).unwrap(),
        STORED.replace("cpus: 1", "cpus: 2")
    );
    assert!(!dir.join("template.edit.yaml").exists());
    assert!(
        stderr(&out).contains("saved the template of dev; it applies on the next start"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn edit_with_an_invalid_change_keeps_the_old_template_and_the_edit() {
    let home = tempfile::tempdir().unwrap();
    let dir = fake_instance(home.path(), "dev", STORED);
    let draft = dir.join("template.edit.yaml");

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["edit", "dev"])
        .env("BERTH_HOME", home.path())
        .env("VISUAL", "sed -i 's/^memory: 1GiB$/memory: 1GB/'")
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "berth: error: {}:2:9: error: memory: size \"1GB\" has an ambiguous unit",
            draft.display()
        )),
        "{err}"
    );
    assert!(err.contains("2 | memory: 1GB\n  |         ^\n"), "{err}");
    assert!(
        err.ends_with(&format!(
            "the template of dev is unchanged; your edit is kept in {}\n",
            draft.display()
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("template.yaml")).unwrap(),
        STORED
    );
    assert_eq!(
        std::fs::read_to_string(&draft).unwrap(),
        STORED.replace("1GiB", "1GB")
    );
}

#[test]
fn edit_without_changes_says_so() {
    let home = tempfile::tempdir().unwrap();
    let dir = fake_instance(home.path(), "dev", STORED);

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["edit", "dev"])
        .env("BERTH_HOME", home.path())
        .env("EDITOR", "true")
        .env_remove("VISUAL")
        .output()
        .unwrap();

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "berth: no changes\n");
    assert!(!dir.join("template.edit.yaml").exists());
}

#[test]
fn edit_of_an_unknown_instance_says_how_to_create_it() {
    let home = tempfile::tempdir().unwrap();

    let out = berth(home.path(), &["edit", "dev"]);

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "berth: error: instance dev does not exist (create it with `berth start dev`)\n"
    );
}

#[test]
fn start_notes_a_project_file_changed_after_the_instance_was_created() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let project = root.path().join("shop");
    std::fs::create_dir(&project).unwrap();
    let instance = fake_instance(home.path(), "shop", STORED);
    let stored = std::fs::File::options()
        .write(true)
        .open(instance.join("template.yaml"))
        .unwrap();
    stored
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .unwrap();
    let file = write(&project, "berth.yaml", "cpus: 2\n");
    let empty_path = tempfile::tempdir().unwrap();

    // No qemu on PATH: start stops right after the template checks.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("start")
        .current_dir(&project)
        .env("BERTH_HOME", home.path())
        .env("PATH", empty_path.path())
        .env_remove("BERTH_QEMU")
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "berth: note: {} changed after instance shop was created; the instance keeps its own template",
            file.display()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(instance.join("template.yaml")).unwrap(),
        STORED
    );
}

#[test]
fn start_resolves_the_user_wide_override_layer_and_points_into_it() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("_config")).unwrap();
    let layer = write(
        &home.path().join("_config"),
        "override.yaml",
        "cpus: 2\nmemory: 2G\n",
    );

    let out = berth(home.path(), &["start", "template:minimal"]);

    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "berth: error: {}:2:9: error: memory: size \"2G\" has an ambiguous unit \"G\"",
            layer.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!home.path().join("minimal").exists());
}
