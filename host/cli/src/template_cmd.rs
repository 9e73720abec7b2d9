//! Templates on the command line: `berth template ...`, `berth validate`,
//! `berth edit`, and how `berth start` finds and stores an instance's
//! template (see `berth_template::instance` for the stored form).
//!
//! Template errors are printed as `berth_template` renders them: file, line
//! and column, the offending line and a caret.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use berth_instance::{InstanceConfig, InstanceName, InstancePaths};
use berth_template::{Host, Layers, Source, Template};
use clap::Subcommand;
use serde::Serialize;

use crate::env;

#[derive(Debug, Subcommand)]
pub(crate) enum TemplateCommand {
    /// List the shipped templates.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a shipped template.
    Show {
        /// A shipped template, e.g. `k3s` or `template:k3s`.
        name: String,
    },
    /// Check a template file (with its bases) against this host.
    Validate { file: PathBuf },
    /// Write a shipped template to DEST (a file, or a directory to receive
    /// berth.yaml) to start a project from. Never overwrites.
    Copy { name: String, dest: PathBuf },
    /// Print the JSON Schema of templates, for editor completion.
    Schema,
}

pub(crate) fn run(command: TemplateCommand) -> Result<()> {
    match command {
        TemplateCommand::List { json } => list(json),
        TemplateCommand::Show { name } => {
            print!("{}", berth_template::show(&name)?);
            Ok(())
        }
        TemplateCommand::Validate { file } => validate(&file),
        TemplateCommand::Copy { name, dest } => {
            let written = berth_template::copy(&name, &dest)?;
            eprintln!(
                "berth: wrote {}; start it with `berth start {}`",
                written.display(),
                start_hint(&written)
            );
            Ok(())
        }
        TemplateCommand::Schema => {
            println!("{}", berth_template::schema());
            Ok(())
        }
    }
}

/// How to start a just-copied template: no argument for `./berth.yaml`.
fn start_hint(written: &Path) -> String {
    if written == Path::new(berth_template::PROJECT_FILE) {
        String::new()
    } else {
        written.display().to_string()
    }
}

/// One row of `berth template list`.
#[derive(Debug, Serialize)]
struct TemplateInfo {
    name: &'static str,
    /// What `berth start` takes: `template:NAME`.
    source: String,
    description: String,
}

fn list(json: bool) -> Result<()> {
    let rows: Vec<TemplateInfo> = berth_template::list_builtin()
        .into_iter()
        .map(|name| TemplateInfo {
            name,
            source: format!("template:{name}"),
            description: berth_template::description(name).unwrap_or_default(),
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("invariant: plain data serializes")
        );
        return Ok(());
    }
    println!("{:<10} DESCRIPTION", "NAME");
    for row in rows {
        println!("{:<10} {}", row.name, row.description);
    }
    Ok(())
}

/// `berth validate FILE` and `berth template validate FILE`.
pub(crate) fn validate(file: &Path) -> Result<()> {
    let template = berth_template::validate(file)?;
    // The template layer accepts what the VM layer would refuse only if the
    // two disagree on bounds; check the derived config too.
    template.to_instance_config().validate()?;
    println!("{}: valid", file.display());
    Ok(())
}

/// What `berth start` was asked to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartTarget {
    /// An instance name: the instance, or a new one from `./berth.yaml` or
    /// `template:default`.
    Name(InstanceName),
    /// A template file or shipped template; a new instance.
    Template(Source),
}

/// Clap value parser: `template:NAME`, anything that looks like a path
/// (has a `/` or ends in `.yaml`/`.yml`), else an instance name.
pub(crate) fn parse_start_target(arg: &str) -> Result<StartTarget, String> {
    let is_template = arg.starts_with("template:")
        || arg.contains('/')
        || Path::new(arg)
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml");
    if is_template {
        Ok(StartTarget::Template(Source::parse(arg)))
    } else {
        arg.parse()
            .map(StartTarget::Name)
            .map_err(|e| format!("{e}"))
    }
}

/// What `berth start` resolved its arguments to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartPlan {
    pub name: InstanceName,
    /// The template for a new instance; `explicit` when the user named it
    /// (starting an existing instance with an explicit template is refused).
    pub source: Source,
    pub explicit: bool,
}

/// `berth start [TARGET] [--name NAME]` in `cwd`:
/// - a template source names the instance after itself (`./web.yaml` ->
///   `web`, `./proj/berth.yaml` -> `proj`, `template:k3s` -> `k3s`) unless
///   `--name` is given;
/// - otherwise `./berth.yaml`, when present, is the template, and the
///   instance is named after the directory unless a name is given;
/// - otherwise the instance is `default` (or the name given) from
///   `template:default`.
pub(crate) fn plan_start(
    target: Option<StartTarget>,
    name: Option<InstanceName>,
    cwd: &Path,
) -> Result<StartPlan> {
    match target {
        Some(StartTarget::Template(source)) => {
            let name = name.unwrap_or_else(|| name_for(&source, cwd));
            Ok(StartPlan {
                name,
                source,
                explicit: true,
            })
        }
        Some(StartTarget::Name(given)) => {
            if let Some(flag) = name
                && flag != given
            {
                bail!("two instance names given: {given} and --name {flag}");
            }
            Ok(implicit(Some(given), cwd))
        }
        None => Ok(implicit(name, cwd)),
    }
}

fn implicit(name: Option<InstanceName>, cwd: &Path) -> StartPlan {
    match berth_template::discover(cwd) {
        Some(found) => StartPlan {
            name: name.unwrap_or(found.instance),
            source: Source::File(found.path),
            explicit: false,
        },
        None => StartPlan {
            name: name.unwrap_or_else(InstanceName::default_instance),
            source: Source::Builtin("default".into()),
            explicit: false,
        },
    }
}

fn name_for(source: &Source, cwd: &Path) -> InstanceName {
    match source {
        Source::File(path) => {
            let path = cwd.join(path);
            let base = if path.file_name() == Some(berth_template::PROJECT_FILE.as_ref()) {
                path.parent().and_then(Path::file_name)
            } else {
                path.file_stem()
            };
            berth_template::sanitize_instance_name(&base.unwrap_or_default().to_string_lossy())
        }
        Source::Builtin(name) | Source::Inline { name, .. } => {
            berth_template::sanitize_instance_name(name)
        }
    }
}

/// `--cpus`, `--memory` (MiB) and `--disk` (GiB) of the first `berth start`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Overrides {
    pub cpus: Option<u32>,
    pub memory: Option<u32>,
    pub disk: Option<u32>,
}

impl Overrides {
    pub(crate) fn is_empty(self) -> bool {
        self.cpus.is_none() && self.memory.is_none() && self.disk.is_none()
    }

    fn apply(self, template: &mut Template) {
        use berth_template::Size;
        if let Some(cpus) = self.cpus {
            template.cpus = Some(cpus);
        }
        if let Some(mib) = self.memory {
            template.memory = Some(Size::from_bytes(u64::from(mib) * Size::MIB));
        }
        if let Some(gib) = self.disk {
            template.disk = Some(Size::from_bytes(u64::from(gib) * Size::GIB));
        }
    }
}

/// Resolves `source` for a new instance: `$BERTH_HOME/_config` layers,
/// defaults, validation, then `overrides`.
pub(crate) fn resolve_new(
    source: &Source,
    berth_home: &Path,
    overrides: Overrides,
) -> Result<Template> {
    let layers = Layers::in_berth_home(berth_home);
    let mut template = berth_template::load_layered(source, &layers, &Host::detect())?;
    overrides.apply(&mut template);
    template
        .to_instance_config()
        .validate()
        .context("invalid --cpus, --memory or --disk")?;
    Ok(template)
}

/// Creates the instance directory with its stored template and the derived
/// `config.json`, which is written last: an instance exists once it has
/// one, so a failure before that leaves no half-created instance.
pub(crate) fn create_instance(
    paths: &InstancePaths,
    name: &InstanceName,
    template: &Template,
    source: &Source,
) -> Result<()> {
    let config = template.to_instance_config();
    config.validate()?;
    std::fs::create_dir_all(&paths.dir)
        .with_context(|| format!("creating {}", paths.dir.display()))?;
    std::fs::set_permissions(
        &paths.dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .with_context(|| format!("restricting {}", paths.dir.display()))?;
    let from = match source {
        Source::File(path) => std::path::absolute(path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string(),
        other => other.display_name(),
    };
    let text = berth_template::instance::render(template, name.as_str(), &from);
    berth_template::instance::save(&paths.template(), &text)?;
    config.save(&paths.config())?;
    Ok(())
}

/// The stored template of an existing instance, validated; `None` for an
/// instance created before templates.
pub(crate) fn load_stored(paths: &InstancePaths) -> Result<Option<Template>> {
    if !paths.template().is_file() {
        return Ok(None);
    }
    Ok(Some(berth_template::instance::load(
        &paths.template(),
        &Host::detect(),
    )?))
}

/// Whether `a` was modified after `b` (false when either is missing).
pub(crate) fn is_newer(a: &Path, b: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(a), modified(b)), (Some(a), Some(b)) if a > b)
}

/// Brings `config.json` in line with the stored template (which `berth
/// edit` may have changed). The data disk keeps the size it was created
/// with.
pub(crate) fn sync_config(paths: &InstancePaths, template: &Template) -> Result<()> {
    let mut derived = template.to_instance_config();
    let existing = InstanceConfig::load(&paths.config())?;
    if existing.disk_gib != derived.disk_gib {
        eprintln!(
            "berth: note: the data disk stays {} GiB; a new disk size applies only to a new instance",
            existing.disk_gib
        );
        derived.disk_gib = existing.disk_gib;
    }
    derived.validate()?;
    if derived != existing {
        derived.save(&paths.config())?;
    }
    Ok(())
}

/// `berth edit NAME`: opens `$VISUAL`/`$EDITOR` (default `vi`) on a copy of
/// the instance's template, validates the result and only then replaces
/// the template. On a validation error the old template stays and the
/// edit is kept next to it.
pub(crate) fn edit(paths: &InstancePaths, name: &InstanceName) -> Result<()> {
    let template = paths.template();
    if !template.is_file() {
        bail!(
            "instance {name} has no template (it was created before templates); recreate it with `berth delete {name}` and `berth start`"
        );
    }
    let original = std::fs::read_to_string(&template)
        .with_context(|| format!("reading {}", template.display()))?;
    let draft = paths.dir.join("template.edit.yaml");
    std::fs::write(&draft, &original).with_context(|| format!("writing {}", draft.display()))?;
    run_editor(&draft)?;
    let edited =
        std::fs::read_to_string(&draft).with_context(|| format!("reading {}", draft.display()))?;
    if edited == original {
        let _ = std::fs::remove_file(&draft);
        eprintln!("berth: no changes");
        return Ok(());
    }
    let checked = berth_template::validate_text(&draft, &edited, &Host::detect())
        .map_err(anyhow::Error::new)
        .and_then(|t| Ok(t.to_instance_config().validate()?));
    if let Err(err) = checked {
        bail!(
            "{err:#}\nthe template of {name} is unchanged; your edit is kept in {}",
            draft.display()
        );
    }
    berth_template::instance::save(&template, &edited)?;
    let _ = std::fs::remove_file(&draft);
    eprintln!(
        "berth: saved the template of {name}; it applies on the next start (`berth restart {name}` if it runs)"
    );
    Ok(())
}

/// Runs the user's editor on `file` through `sh`, as git does, so that
/// `EDITOR="code --wait"` works.
fn run_editor(file: &Path) -> Result<()> {
    let editor = [env::VISUAL, env::EDITOR]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned());
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("berth-edit")
        .arg(file);
    if !std::io::stdin().is_terminal() {
        // Scripted editors (tests, `EDITOR="sed -i ..."`) need no terminal;
        // an interactive one gets ours.
        command.stdin(std::process::Stdio::null());
    }
    let status = command
        .status()
        .with_context(|| format!("running the editor {editor:?}"))?;
    if !status.success() {
        bail!(
            "the editor {editor:?} failed ({status}); the template is unchanged, your edit is in {}",
            file.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> InstanceName {
        s.parse().unwrap()
    }

    #[test]
    fn parse_start_target_tells_names_from_templates() {
        assert_eq!(
            parse_start_target("dev").unwrap(),
            StartTarget::Name(name("dev"))
        );
        assert_eq!(
            parse_start_target("template:k3s").unwrap(),
            StartTarget::Template(Source::Builtin("k3s".into()))
        );
        assert_eq!(
            parse_start_target("web.yaml").unwrap(),
            StartTarget::Template(Source::File("web.yaml".into()))
        );
        assert_eq!(
            parse_start_target("./x").unwrap(),
            StartTarget::Template(Source::File("./x".into()))
        );
        assert!(
            parse_start_target("Bad_Name")
                .unwrap_err()
                .contains("invalid instance name \"Bad_Name\"")
        );
    }

    #[test]
    fn plan_start_names_instances_after_their_template() {
        let cwd = Path::new("/nonexistent/My Proj");
        let plan = |t: &str, n: Option<&str>| {
            plan_start(Some(parse_start_target(t).unwrap()), n.map(name), cwd).unwrap()
        };
        assert_eq!(plan("./web.yaml", None).name, name("web"));
        assert_eq!(plan("sub/berth.yaml", None).name, name("sub"));
        assert_eq!(plan("./berth.yaml", None).name, name("my-proj"));
        assert_eq!(plan("template:k3s", None).name, name("k3s"));
        let given = plan("template:k3s", Some("kube"));
        assert_eq!(given.name, name("kube"));
        assert!(given.explicit);
    }

    #[test]
    fn plan_start_discovers_berth_yaml_in_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("Web_App");
        std::fs::create_dir(&dir).unwrap();

        let none = plan_start(None, None, &dir).unwrap();
        assert_eq!(
            none,
            StartPlan {
                name: InstanceName::default_instance(),
                source: Source::Builtin("default".into()),
                explicit: false,
            }
        );

        std::fs::write(dir.join("berth.yaml"), "cpus: 1\n").unwrap();
        let found = plan_start(None, None, &dir).unwrap();
        assert_eq!(found.name, name("web-app"));
        assert_eq!(found.source, Source::File(dir.join("berth.yaml")));
        assert!(!found.explicit);
        let named = plan_start(Some(StartTarget::Name(name("dev"))), None, &dir).unwrap();
        assert_eq!(named.name, name("dev"));
        assert_eq!(named.source, Source::File(dir.join("berth.yaml")));
    }

    #[test]
    fn plan_start_refuses_two_different_names() {
        let err = plan_start(
            Some(StartTarget::Name(name("a"))),
            Some(name("b")),
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "two instance names given: a and --name b");
    }
}
