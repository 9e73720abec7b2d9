//! The resolved template an instance keeps: `$BERTH_HOME/<name>/template.yaml`.
//!
//! `berth start` resolves the template once, when it creates the instance
//! (source, bases, user-wide layers, defaults, `--cpus`-style overrides),
//! and stores the result here. Every later start, `berth edit` and the host
//! agent read this file, and only this file: editing the project's
//! `berth.yaml` or a layer afterwards does not change an existing instance.
//! The stored template is complete (no `base:`, every default filled in), so
//! it validates on its own.

use std::io::Write;
use std::path::Path;

use crate::defaults::Host;
use crate::error::{Error, Result};
use crate::load::Source;
use crate::schema::Template;

/// The YAML stored for an instance: a header naming where it came from,
/// then the template.
pub fn render(template: &Template, instance: &str, from: &str) -> String {
    let yaml = serde_saphyr::to_string(template)
        .expect("invariant: a template (plain data, string keys) always serializes to YAML");
    format!(
        "# Template of berth instance {instance}, resolved from {from}\n\
         # (its bases, $BERTH_HOME/_config layers and defaults included).\n\
         # Change it with `berth edit {instance}`; changes apply on the next start.\n\
         {yaml}"
    )
}

/// Loads, defaults and validates an instance's stored template (what the
/// host agent and `berth start` call).
pub fn load(path: &Path, host: &Host) -> Result<Template> {
    crate::load_template(&Source::File(path.to_path_buf()), host)
}

/// Writes `text` to `path` atomically (a temporary file next to it, then a
/// rename): a reader sees the old file or the new one, never a mix.
pub fn save(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    let write = |p: &Path, source| Error::Write {
        path: p.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::create(&tmp).map_err(|e| write(&tmp, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| write(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| write(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Arch, Size};

    fn host(home: &Path) -> Host {
        Host {
            os: "linux".into(),
            arch: Some(Arch::X86_64),
            cpus: 8,
            memory: Some(Size::from_bytes(16 * Size::GIB)),
            home: Some(home.to_path_buf()),
        }
    }

    #[test]
    fn every_shipped_template_round_trips_through_the_stored_form() {
        let dir = tempfile::tempdir().unwrap();
        let host = host(dir.path());
        for name in crate::list_builtin() {
            let resolved = crate::load_template(&Source::Builtin(name.into()), &host).unwrap();
            let path = dir.path().join(format!("{name}.yaml"));
            save(
                &path,
                &render(&resolved, "dev", &format!("template:{name}")),
            )
            .unwrap();
            let loaded = load(&path, &host).unwrap_or_else(|e| panic!("{name}:\n{e}"));
            assert_eq!(loaded, resolved, "{name}");
        }
    }

    #[test]
    fn render_starts_with_a_header_naming_the_source() {
        let text = render(&Template::default(), "web", "/p/berth.yaml");
        assert!(
            text.starts_with("# Template of berth instance web, resolved from /p/berth.yaml\n"),
            "{text}"
        );
        assert!(text.contains("berth edit web"), "{text}");
    }

    #[test]
    fn save_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("template.yaml");
        save(&path, "cpus: 1\n").unwrap();
        save(&path, "cpus: 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "cpus: 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("template.yaml")]);
    }
}
