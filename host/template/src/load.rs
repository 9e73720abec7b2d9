//! Step 1: read and parse each document, resolve `base:` chains and merge
//! the layers. Nothing here applies defaults or judges values beyond what
//! the types enforce.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, ParseError, Pos, Result};
use crate::schema::{Docker, HostResolver, Mount, Template};
use crate::tree::{LineCol, Seg, Tree};

/// Where a template comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A YAML file on disk.
    File(PathBuf),
    /// A shipped template, written `template:NAME`.
    Builtin(String),
    /// Text not (yet) on disk, e.g. `berth edit`'s buffer before it is
    /// saved. `name` is used in errors and `dir` resolves relative paths.
    Inline {
        name: String,
        dir: Option<PathBuf>,
        text: String,
    },
}

impl Source {
    /// `template:NAME` is a shipped template, anything else a path.
    pub fn parse(spec: &str) -> Self {
        match spec.strip_prefix("template:") {
            Some(name) => Source::Builtin(name.trim_start_matches("//").to_owned()),
            None => Source::File(PathBuf::from(spec)),
        }
    }

    /// How errors name this source.
    pub fn display_name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Builtin(name) => format!("template:{name}"),
            Source::Inline { name, .. } => name.clone(),
        }
    }

    /// Identity for cycle detection.
    fn id(&self) -> String {
        match self {
            Source::File(p) => fs_canonical(p).display().to_string(),
            Source::Builtin(name) => format!("template:{name}"),
            Source::Inline { name, .. } => format!("inline:{name}"),
        }
    }
}

fn fs_canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// One parsed file with what is needed to point into it.
#[derive(Debug)]
pub struct Document {
    pub name: String,
    pub text: String,
    pub tree: Tree,
    /// As written in this file (mount paths already made absolute).
    pub template: Template,
    /// Directory relative paths resolve against (`None` for shipped templates).
    pub dir: Option<PathBuf>,
}

impl Document {
    pub(crate) fn pos(&self, at: LineCol) -> Pos {
        Pos::new(&self.name, &self.text, at.line, at.column)
    }
    pub(crate) fn value_pos(&self, path: &[Seg<'_>]) -> Pos {
        self.pos(self.tree.value_at(path))
    }
    pub(crate) fn key_pos(&self, path: &[Seg<'_>]) -> Pos {
        self.pos(self.tree.key_at(path))
    }
}

/// The merged result of a source, its bases and any layers, plus every
/// document that went into it (for validation positions).
#[derive(Debug)]
pub struct Loaded {
    pub template: Template,
    pub documents: Vec<Document>,
    /// For each top-level key of the merged template, the document (index
    /// into `documents`) whose value won.
    pub origins: BTreeMap<String, usize>,
}

/// Parses YAML text as one template document. `name` is used in errors.
pub fn parse(name: &str, text: &str) -> Result<Template, ParseError> {
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Template::default());
    }
    serde_saphyr::from_str::<Template>(text).map_err(|err| {
        let (line, column) = err
            .location()
            .map(|l| {
                (
                    usize::try_from(l.line()).unwrap_or(1).max(1),
                    usize::try_from(l.column()).unwrap_or(1).max(1),
                )
            })
            .unwrap_or((1, 1));
        let mut message = err.without_snippet().to_string();
        let suffix = format!(" at line {line}, column {column}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
        // "invalid u32" says little on its own: name the field whose value
        // is wrong (keys, as in unknown-field errors, name themselves).
        if let Some(path) = Tree::parse(text).path_of_value(LineCol { line, column }) {
            message = format!("{path}: {message}");
        }
        ParseError {
            pos: Pos::new(name, text, line, column),
            message,
        }
    })
}

/// Expands `~` and `~/...` with `home`; makes relative paths absolute
/// against `dir`.
pub fn expand_path(path: &str, home: Option<&Path>, dir: Option<&Path>) -> PathBuf {
    let expanded = match (path.strip_prefix('~'), home) {
        (Some(""), Some(home)) => home.to_path_buf(),
        (Some(rest), Some(home)) if rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(path),
    };
    match dir {
        Some(dir) if expanded.is_relative() => normalize(&dir.join(expanded)),
        _ => expanded,
    }
}

/// Removes `.` and `..` components lexically (the path may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Reads and parses one source, without following `base`.
pub fn load_document(source: &Source, home: Option<&Path>) -> Result<Document> {
    let (text, dir) = match source {
        Source::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let dir = std::path::absolute(path)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            (text, dir)
        }
        Source::Builtin(name) => {
            let text = crate::builtin::builtin(name).ok_or_else(|| Error::UnknownBuiltin {
                name: name.clone(),
                known: crate::builtin::known(),
            })?;
            (text.to_owned(), None)
        }
        Source::Inline { dir, text, .. } => (text.clone(), dir.clone()),
    };
    let name = source.display_name();
    let mut template = parse(&name, &text).map_err(Error::Parse)?;
    for mount in template.mounts.iter_mut().flatten() {
        let location = expand_path(&mount.location, home, dir.as_deref());
        mount.location = location.display().to_string();
    }
    let tree = Tree::parse(&text);
    Ok(Document {
        name,
        text,
        tree,
        template,
        dir,
    })
}

/// Loads `source` and its bases, merged. `home` expands `~` in mounts.
pub fn load(source: &Source, home: Option<&Path>) -> Result<Loaded> {
    let mut loaded = Loaded {
        template: Template::default(),
        documents: Vec::new(),
        origins: BTreeMap::new(),
    };
    let mut stack = Vec::new();
    let (template, origins) = resolve(source, home, &mut stack, &mut loaded.documents, None)?;
    loaded.template = template;
    loaded.origins = origins;
    Ok(loaded)
}

/// The user-wide layers around a template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layers {
    /// Under the template: `$BERTH_HOME/_config/default.yaml`.
    pub default: Option<PathBuf>,
    /// Over the template: `$BERTH_HOME/_config/override.yaml`.
    pub override_: Option<PathBuf>,
}

impl Layers {
    /// The layer files under `berth_home`, where they exist.
    pub fn in_berth_home(berth_home: &Path) -> Self {
        let file = |name: &str| {
            let p = berth_home.join("_config").join(name);
            p.is_file().then_some(p)
        };
        Self {
            default: file("default.yaml"),
            override_: file("override.yaml"),
        }
    }
}

/// default.yaml (+ its bases) < `source` (+ its bases) < override.yaml (+ its bases).
pub fn load_layers(source: &Source, layers: &Layers, home: Option<&Path>) -> Result<Loaded> {
    let mut documents = Vec::new();
    let mut result: Option<(Template, Origins)> = None;
    let sources = layers
        .default
        .iter()
        .map(|p| Source::File(p.clone()))
        .chain(std::iter::once(source.clone()))
        .chain(layers.override_.iter().map(|p| Source::File(p.clone())));
    for layer in sources {
        let mut stack = Vec::new();
        let upper = resolve(&layer, home, &mut stack, &mut documents, None)?;
        result = Some(match result {
            None => upper,
            Some(lower) => merge_with_origins(upper, lower),
        });
    }
    let (template, origins) = result.unwrap_or_default();
    Ok(Loaded {
        template,
        documents,
        origins,
    })
}

type Origins = BTreeMap<String, usize>;

fn resolve(
    source: &Source,
    home: Option<&Path>,
    stack: &mut Vec<(String, String)>,
    documents: &mut Vec<Document>,
    included_at: Option<Pos>,
) -> Result<(Template, Origins)> {
    let id = source.id();
    if let Some(start) = stack.iter().position(|(i, _)| *i == id) {
        let chain: Vec<&str> = stack[start..]
            .iter()
            .map(|(_, name)| name.as_str())
            .chain(std::iter::once(stack[start].1.as_str()))
            .collect();
        let pos = included_at.unwrap_or_else(|| Pos::new(&source.display_name(), "", 1, 1));
        return Err(Error::base(
            pos,
            format!("base cycle: {}", chain.join(" -> ")),
        ));
    }
    let doc = match load_document(source, home) {
        Ok(doc) => doc,
        Err(Error::Read { path, source: io }) if included_at.is_some() => {
            let pos = included_at.expect("checked is_some");
            return Err(Error::base(
                pos,
                format!("cannot read base {}: {io}", path.display()),
            ));
        }
        Err(Error::UnknownBuiltin { name, known }) if included_at.is_some() => {
            let pos = included_at.expect("checked is_some");
            return Err(Error::base(
                pos,
                format!("unknown template {name:?}; shipped templates: {known}"),
            ));
        }
        Err(e) => return Err(e),
    };
    stack.push((id, doc.name.clone()));
    let index = documents.len();
    let mut own = doc.template.clone();
    let bases = own.base.take();
    let own_origins: Origins = top_level_keys(&doc.tree)
        .into_iter()
        .filter(|k| k != "base")
        .map(|k| (k, index))
        .collect();
    let base_specs: Vec<(String, Pos)> = bases
        .as_ref()
        .map(|b| {
            let many = matches!(b, crate::schema::Bases::Many(_));
            b.as_slice()
                .iter()
                .enumerate()
                .map(|(i, spec)| {
                    let pos = if many {
                        doc.value_pos(&[Seg::Key("base"), Seg::Index(i)])
                    } else {
                        doc.value_pos(&[Seg::Key("base")])
                    };
                    (spec.clone(), pos)
                })
                .collect()
        })
        .unwrap_or_default();
    let doc_dir = doc.dir.clone();
    documents.push(doc);

    // Earlier bases win over later ones, and the file itself over all.
    let mut merged: Option<(Template, Origins)> = None;
    for (spec, pos) in base_specs.iter().rev() {
        let base_source = base_source(spec, doc_dir.as_deref());
        let base = resolve(&base_source, home, stack, documents, Some(pos.clone()))?;
        merged = Some(match merged {
            None => base,
            Some(lower) => merge_with_origins(base, lower),
        });
    }
    stack.pop();
    Ok(match merged {
        None => (own, own_origins),
        Some(lower) => merge_with_origins((own, own_origins), lower),
    })
}

/// `template:NAME` is shipped; a path is relative to the including file
/// (inside a shipped template, a relative name means another shipped one).
fn base_source(spec: &str, dir: Option<&Path>) -> Source {
    match (Source::parse(spec), dir) {
        (Source::File(p), Some(dir)) if p.is_relative() => Source::File(normalize(&dir.join(p))),
        (Source::File(p), None) if p.is_relative() => {
            let name = p.display().to_string();
            let name = name.trim_start_matches("./");
            Source::Builtin(name.strip_suffix(".yaml").unwrap_or(name).to_owned())
        }
        (other, _) => other,
    }
}

fn top_level_keys(tree: &Tree) -> Vec<String> {
    match &tree.root {
        crate::tree::Node::Map(entries) => entries.iter().map(|e| e.key.clone()).collect(),
        _ => Vec::new(),
    }
}

fn merge_with_origins(
    upper: (Template, Origins),
    lower: (Template, Origins),
) -> (Template, Origins) {
    let (upper_t, upper_o) = upper;
    let (lower_t, mut origins) = lower;
    origins.extend(upper_o);
    (merge(upper_t, lower_t), origins)
}

/// Merges two layers; `upper` is the child (or the higher layer).
///
/// - scalars (`vmType`, `arch`, `cpus`, `memory`, `disk`, `message`,
///   `docker.enabled`, `hostResolver.enabled`): the upper value wins;
/// - maps (`env`, `hosts`, `hostResolver.hosts`): merged, upper wins per key;
/// - `mounts`, `portForwards`, `images`: upper entries first, then lower
///   ones (the first match wins); mounts with a `mountPoint` (or location)
///   already taken by an upper entry are dropped;
/// - `provision`, `probes`: lower entries first (bases run first);
/// - `docker.registryMirrors`, `docker.insecureRegistries`,
///   `docker.addressPools`: upper first, then lower, duplicates dropped;
/// - `dns`: the upper list replaces the lower one when non-empty.
pub fn merge(upper: Template, lower: Template) -> Template {
    Template {
        base: None,
        vm_type: upper.vm_type.or(lower.vm_type),
        arch: upper.arch.or(lower.arch),
        cpus: upper.cpus.or(lower.cpus),
        memory: upper.memory.or(lower.memory),
        disk: upper.disk.or(lower.disk),
        images: concat(upper.images, lower.images),
        mounts: match (upper.mounts, lower.mounts) {
            (Some(u), Some(l)) => Some(merge_mounts(u, l)),
            (u, l) => u.or(l),
        },
        port_forwards: concat(upper.port_forwards, lower.port_forwards),
        env: merge_map(upper.env, lower.env),
        provision: concat(lower.provision, upper.provision),
        probes: concat(lower.probes, upper.probes),
        docker: match (upper.docker, lower.docker) {
            (Some(u), Some(l)) => Some(Docker {
                enabled: u.enabled.or(l.enabled),
                address_pools: concat_unique(u.address_pools, l.address_pools),
                registry_mirrors: concat_unique(u.registry_mirrors, l.registry_mirrors),
                insecure_registries: concat_unique(u.insecure_registries, l.insecure_registries),
            }),
            (u, l) => u.or(l),
        },
        dns: if upper.dns.is_empty() {
            lower.dns
        } else {
            upper.dns
        },
        host_resolver: match (upper.host_resolver, lower.host_resolver) {
            (Some(u), Some(l)) => Some(HostResolver {
                enabled: u.enabled.or(l.enabled),
                hosts: merge_map(u.hosts, l.hosts),
            }),
            (u, l) => u.or(l),
        },
        hosts: merge_map(upper.hosts, lower.hosts),
        message: upper.message.or(lower.message),
    }
}

fn concat<T>(mut first: Vec<T>, second: Vec<T>) -> Vec<T> {
    first.extend(second);
    first
}

fn concat_unique<T: PartialEq>(mut first: Vec<T>, second: Vec<T>) -> Vec<T> {
    for item in second {
        if !first.contains(&item) {
            first.push(item);
        }
    }
    first
}

fn merge_map<K: Ord, V>(upper: BTreeMap<K, V>, mut lower: BTreeMap<K, V>) -> BTreeMap<K, V> {
    lower.extend(upper);
    lower
}

fn merge_mounts(upper: Vec<Mount>, lower: Vec<Mount>) -> Vec<Mount> {
    let target = |m: &Mount| m.mount_point.clone().unwrap_or_else(|| m.location.clone());
    let mut out = upper;
    for mount in lower {
        if !out.iter().any(|m| target(m) == target(&mount)) {
            out.push(mount);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_an_empty_document() {
        assert_eq!(parse("e.yaml", "# nothing\n").unwrap(), Template::default());
    }

    #[test]
    fn expand_path_expands_tilde_and_relative() {
        let home = Path::new("/home/u");
        assert_eq!(expand_path("~", Some(home), None), PathBuf::from("/home/u"));
        assert_eq!(
            expand_path("~/src", Some(home), None),
            PathBuf::from("/home/u/src")
        );
        assert_eq!(
            expand_path("../data", Some(home), Some(Path::new("/p/proj"))),
            PathBuf::from("/p/data")
        );
    }

    #[test]
    fn source_parse_distinguishes_builtins() {
        assert_eq!(Source::parse("template:k3s"), Source::Builtin("k3s".into()));
        assert_eq!(
            Source::parse("./berth.yaml"),
            Source::File(PathBuf::from("./berth.yaml"))
        );
    }
}
