//! The legacy builder (`POST /build`, `DOCKER_BUILDKIT=0 docker build`).
//!
//! A build runs the Dockerfile's instructions in order, each producing an
//! image (untagged, the next step's parent):
//!
//! * `RUN` creates a container from the current image, runs it with the
//!   build's `ARG`s in its environment, commits its upper directory as a
//!   new layer ([`image::commit`](crate::image::commit)) and removes it;
//! * `COPY`/`ADD` write the selected build-context files (after
//!   `.dockerignore`) into a layer tar under the destination, owned by
//!   `--chown` (root by default); `ADD` extracts local tar archives;
//! * every other instruction only changes the config (`empty_layer`).
//!
//! Each step's result is remembered in a layer cache (`build-cache.json`
//! in the image store) under sha256(parent image, expanded instruction,
//! and for `COPY`/`ADD` a hash of the copied files' paths, modes, owners
//! and content; for `RUN` the build args it sees). A later build whose
//! step has the same key reuses the image (`---> Using cache`) unless
//! `--no-cache`. Output is streamed as the legacy builder's text lines.

pub mod dockerfile;
pub mod dockerignore;
mod import;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc::UnboundedSender;

use crate::container::{Config, HostConfig, WaitCondition};
use crate::image::commit::{ImageSpec, LayerSource, create_image};
use crate::image::{ContainerConfig, History, Image, short_id, store};
use crate::{Engine, Error, Result};
use dockerfile::{Instruction, Vars, key_values, process_word, process_words};

/// What a build was asked to do.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's path inside the context (`Dockerfile` by default).
    pub dockerfile: String,
    /// `-t` names.
    pub tags: Vec<String>,
    /// `--build-arg`s; `None` values mean "unset".
    pub build_args: BTreeMap<String, Option<String>>,
    pub no_cache: bool,
    /// `--label`s added to the final image.
    pub labels: BTreeMap<String, String>,
}

/// One line of build output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Text for `{"stream": ...}`.
    Stream(String),
    /// The built image's ID, for `{"aux": {"ID": ...}}`.
    Aux(String),
}

/// Where build output goes.
pub type Output = UnboundedSender<Message>;

fn say(out: &Output, text: impl Into<String>) {
    let _ = out.send(Message::Stream(text.into()));
}

/// Serializes read-modify-write of the cache file within this process.
static CACHE_LOCK: Mutex<()> = Mutex::new(());

/// The persisted layer cache: key -> image ID.
struct Cache {
    path: PathBuf,
}

impl Cache {
    fn read(&self) -> BTreeMap<String, String> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn get(&self, key: &str) -> Option<String> {
        let _lock = CACHE_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.read().remove(key)
    }

    fn put(&self, key: &str, id: &str) -> Result<()> {
        let _lock = CACHE_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut map = self.read();
        map.insert(key.to_owned(), id.to_owned());
        let bytes = serde_json::to_vec_pretty(&map).expect("invariant: the cache map serializes");
        store::write_atomic(&self.path, &bytes)?;
        Ok(())
    }
}

fn cache_key(parent: &str, step: &str, extra: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [parent, step, extra] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// Applies one `--change` instruction (commit, import) to `config`.
pub fn apply_change(config: &mut ContainerConfig, change: &str) -> Result<()> {
    let instructions = dockerfile::parse(change)
        .map_err(|e| Error::InvalidArgument(format!("invalid change {change:?}: {e}")))?;
    let vars = env_vars(config);
    for ins in &instructions {
        if !matches!(
            ins.keyword.as_str(),
            "CMD"
                | "ENTRYPOINT"
                | "ENV"
                | "EXPOSE"
                | "LABEL"
                | "ONBUILD"
                | "STOPSIGNAL"
                | "USER"
                | "VOLUME"
                | "WORKDIR"
                | "HEALTHCHECK"
        ) {
            return Err(Error::InvalidArgument(format!(
                "{} is not a valid change command",
                ins.keyword.to_lowercase()
            )));
        }
        apply_metadata(config, ins, &vars, &["/bin/sh".into(), "-c".into()])
            .map_err(Error::InvalidArgument)?;
    }
    Ok(())
}

/// The variables a config's `Env` defines.
fn env_vars(config: &ContainerConfig) -> Vars {
    config
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn set_env(config: &mut ContainerConfig, key: &str, value: &str) {
    let env = config.env.get_or_insert_with(Vec::new);
    let entry = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// A `CMD`/`ENTRYPOINT`/`RUN` command: exec form as is, shell form under `shell`.
fn command_of(ins: &Instruction, shell: &[String]) -> Vec<String> {
    match &ins.json {
        Some(argv) => argv.clone(),
        None => shell
            .iter()
            .cloned()
            .chain(std::iter::once(ins.args.clone()))
            .collect(),
    }
}

/// Parses a Go duration like `30s`, `1m30s`, `500ms` into nanoseconds.
fn duration_nanos(text: &str) -> std::result::Result<u64, String> {
    let mut total = 0f64;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek().filter(|n| n.is_ascii_alphabetic()) {
            unit.push(n);
            chars.next();
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        number.clear();
        total += value
            * match unit.as_str() {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(format!("invalid duration {text:?}")),
            };
    }
    if !number.is_empty() {
        return Err(format!("invalid duration {text:?}: missing unit"));
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "durations are small and non-negative"
    )]
    Ok(total as u64)
}

/// Applies a config-only instruction. `Err` carries Docker's message.
fn apply_metadata(
    config: &mut ContainerConfig,
    ins: &Instruction,
    vars: &Vars,
    shell: &[String],
) -> std::result::Result<(), String> {
    match ins.keyword.as_str() {
        "ENV" => {
            for (key, value) in key_values("ENV", &ins.args, vars)? {
                set_env(config, &key, value.as_deref().unwrap_or_default());
            }
        }
        "LABEL" => {
            let labels = config.labels.get_or_insert_with(BTreeMap::new);
            for (key, value) in key_values("LABEL", &ins.args, vars)? {
                labels.insert(key, value.unwrap_or_default());
            }
        }
        "WORKDIR" => {
            let dir = process_word(&ins.args, vars)?;
            config.working_dir = if dir.starts_with('/') {
                clean_absolute(&dir)
            } else {
                let base = if config.working_dir.is_empty() {
                    "/"
                } else {
                    &config.working_dir
                };
                clean_absolute(&format!("{base}/{dir}"))
            };
        }
        "USER" => config.user = process_word(&ins.args, vars)?,
        "STOPSIGNAL" => config.stop_signal = Some(process_word(&ins.args, vars)?),
        "CMD" => config.cmd = Some(command_of(ins, shell)),
        "ENTRYPOINT" => config.entrypoint = Some(command_of(ins, shell)),
        "EXPOSE" => {
            let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
            for port in process_words(&ins.args, vars)? {
                let port = if port.contains('/') {
                    port.to_lowercase()
                } else {
                    format!("{port}/tcp")
                };
                ports.insert(port, serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let paths = match &ins.json {
                Some(paths) => paths.clone(),
                None => process_words(&ins.args, vars)?,
            };
            let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
            for path in paths {
                if path.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                volumes.insert(path, serde_json::json!({}));
            }
        }
        "ONBUILD" => {
            let list = config
                .extra
                .entry("OnBuild")
                .or_insert_with(|| serde_json::json!([]));
            if let Some(list) = list.as_array_mut() {
                list.push(serde_json::Value::String(ins.args.clone()));
            }
        }
        "HEALTHCHECK" => {
            let args = ins.args.trim();
            if args.eq_ignore_ascii_case("NONE") {
                config.healthcheck = Some(serde_json::json!({ "Test": ["NONE"] }));
                return Ok(());
            }
            let Some(rest) = args
                .strip_prefix("CMD")
                .or_else(|| args.strip_prefix("cmd"))
            else {
                return Err("HEALTHCHECK must be NONE or CMD <command>".into());
            };
            let rest = rest.trim();
            let test: Vec<String> = match serde_json::from_str::<Vec<String>>(rest) {
                Ok(argv) => std::iter::once("CMD".to_owned()).chain(argv).collect(),
                Err(_) => vec!["CMD-SHELL".to_owned(), rest.to_owned()],
            };
            let mut check = serde_json::json!({ "Test": test });
            for (name, value) in &ins.flags {
                let field = match name.as_str() {
                    "interval" => "Interval",
                    "timeout" => "Timeout",
                    "start-period" => "StartPeriod",
                    "start-interval" => "StartInterval",
                    "retries" => {
                        let retries: u64 = value
                            .parse()
                            .map_err(|_| format!("invalid --retries {value:?}"))?;
                        check["Retries"] = retries.into();
                        continue;
                    }
                    other => return Err(format!("unknown flag: --{other}")),
                };
                check[field] = duration_nanos(value)?.into();
            }
            config.healthcheck = Some(check);
        }
        other => return Err(format!("{other} cannot change an image config")),
    }
    Ok(())
}

/// `/a/./b/../c` -> `/a/c`.
fn clean_absolute(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Cleans a context-relative source path; `None` if it leaves the context.
fn clean_relative(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// The mutable state of one stage.
struct Stage {
    /// The current image; `None` for `FROM scratch` before any step.
    image: Option<Image>,
    config: ContainerConfig,
    /// Declared `ARG`s and their values.
    args: BTreeMap<String, Option<String>>,
    shell: Vec<String>,
    /// Whether this stage set `CMD` (an `ENTRYPOINT` otherwise clears it).
    cmd_set: bool,
}

impl Stage {
    fn id(&self) -> String {
        self.image
            .as_ref()
            .map_or_else(|| "scratch".to_owned(), |i| i.id.clone())
    }

    /// Variables for expansion: ARG values, overridden by ENV.
    fn vars(&self) -> Vars {
        let mut vars: Vars = self
            .args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        vars.extend(env_vars(&self.config));
        vars
    }

    /// `KEY=value` of the ARGs a RUN sees (those not shadowed by ENV).
    fn arg_env(&self) -> Vec<String> {
        let env = env_vars(&self.config);
        self.args
            .iter()
            .filter(|(k, _)| !env.contains_key(*k))
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect()
    }
}

/// A user-facing build failure.
fn fail(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

/// The build directory; removed when the build ends.
struct BuildDir(PathBuf);

impl Drop for BuildDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        live_builds().remove(&self.0);
    }
}

impl BuildDir {
    /// A fresh build directory under `builds`, after removing stale ones
    /// (under the registry lock, so a concurrent build's is never taken).
    fn claim(builds: &Path) -> Self {
        let mut live = live_builds();
        remove_stale_builds(builds, &live);
        let dir = builds.join(store::random_name());
        live.insert(dir.clone());
        Self(dir)
    }
}

/// Build directories of this process's running builds.
fn live_builds() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes what builds of an earlier agent process left behind (a crash
/// mid-build): every build directory no running build owns. Stage mounts
/// (`from-*`) are detached first so removal never reaches image layers.
fn remove_stale_builds(builds: &Path, live: &BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(builds) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if live.contains(&dir) {
            continue;
        }
        for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if sub.file_name().to_string_lossy().starts_with("from-") {
                let _ = nix::mount::umount2(&sub.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        tracing::info!(dir = %dir.display(), "removing a stale build directory");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Unpacks the (possibly compressed) context tar into `dir`.
fn unpack_context(reader: impl Read + Send, dir: &Path) -> Result<()> {
    let read_err = |e: io::Error| fail(format!("failed to read the build context: {e}"));
    let mut reader = store::decompress(io::BufReader::new(reader)).map_err(read_err)?;
    // `docker build - < Dockerfile` sends the Dockerfile itself, not a tar.
    let mut head = Vec::with_capacity(512);
    reader
        .by_ref()
        .take(512)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let is_tar = head.len() == 512 && &head[257..262] == b"ustar";
    let mut reader = io::Cursor::new(head).chain(reader);
    if !is_tar {
        let path = dir.join("Dockerfile");
        let mut file = std::fs::File::create(&path).map_err(Error::io("create", &path))?;
        io::copy(&mut reader, &mut file).map_err(read_err)?;
        return Ok(());
    }
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive
        .unpack(dir)
        .map_err(|e| fail(format!("failed to unpack the build context: {e}")))
}

impl Engine {
    /// Runs a legacy build of the context tar `context`, streaming output
    /// to `out`. Returns the final image ID.
    pub async fn build(
        self: &Arc<Self>,
        context: impl Read + Send + 'static,
        options: BuildOptions,
        out: Output,
    ) -> Result<String> {
        let dir = BuildDir::claim(&self.root.join("build"));
        let context_dir = dir.0.join("context");
        std::fs::create_dir_all(&context_dir).map_err(Error::io("create", &context_dir))?;
        let unpack_into = context_dir.clone();
        tokio::task::spawn_blocking(move || unpack_context(context, &unpack_into))
            .await
            .map_err(|e| Error::runtime(format!("build context task failed: {e}")))??;
        let name = if options.dockerfile.is_empty() {
            "Dockerfile"
        } else {
            options.dockerfile.as_str()
        };
        let relative = clean_relative(name)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                fail(format!(
                    "the Dockerfile ({name}) must be within the build context"
                ))
            })?;
        let path = context_dir.join(&relative);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| fail(format!("Cannot locate specified Dockerfile: {name}: {e}")))?;
        let mut instructions = dockerfile::parse(&text).map_err(|e| fail(e.to_string()))?;
        if !options.labels.is_empty() {
            let args: Vec<String> = options
                .labels
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        serde_json::to_string(k).unwrap_or_default(),
                        serde_json::to_string(v).unwrap_or_default()
                    )
                })
                .collect();
            let args = args.join(" ");
            instructions.push(Instruction {
                line: 0,
                keyword: "LABEL".into(),
                flags: Vec::new(),
                original: format!("LABEL {args}"),
                args,
                json: None,
            });
        }
        let ignore = std::fs::read_to_string(context_dir.join(".dockerignore"))
            .map(|t| dockerignore::Matcher::new(&t))
            .unwrap_or_default();
        let mut builder = Builder {
            engine: self.clone(),
            options: &options,
            out: &out,
            context: context_dir,
            scratch: dir.0.clone(),
            ignore,
            cache: Cache {
                path: self.images.root().join("build-cache.json"),
            },
            used_args: BTreeSet::new(),
            stage_ids: Vec::new(),
            aliases: BTreeMap::new(),
        };
        let id = builder.run(&instructions).await?;
        let unused: Vec<&String> = options
            .build_args
            .keys()
            .filter(|k| !builder.used_args.contains(*k) && !PREDEFINED_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            say(
                &out,
                format!(
                    "[Warning] One or more build-args [{}] were not consumed\n",
                    names.join(" ")
                ),
            );
        }
        let _ = out.send(Message::Aux(id.clone()));
        say(&out, format!("Successfully built {}\n", short_id(&id)));
        for tag in &options.tags {
            let (_, familiar) = self.images.tag(&id, tag)?;
            let mut attributes = BTreeMap::new();
            attributes.insert("name".to_owned(), familiar.clone());
            self.events.publish("image", "tag", &id, attributes);
            say(&out, format!("Successfully tagged {familiar}\n"));
        }
        drop(dir);
        Ok(id)
    }
}

/// Args every build knows without an `ARG` line (never "unconsumed").
const PREDEFINED_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

struct Builder<'a> {
    engine: Arc<Engine>,
    /// Image ID of each stage so far, and stage names -> index.
    stage_ids: Vec<String>,
    aliases: BTreeMap<String, usize>,
    options: &'a BuildOptions,
    out: &'a Output,
    context: PathBuf,
    scratch: PathBuf,
    ignore: dockerignore::Matcher,
    cache: Cache,
    used_args: BTreeSet<String>,
}

impl Builder<'_> {
    async fn run(&mut self, instructions: &[Instruction]) -> Result<String> {
        let total = instructions.len();
        let mut meta_args: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut stage: Option<Stage> = None;
        for (index, ins) in instructions.iter().enumerate() {
            say(
                self.out,
                format!("Step {}/{total} : {}\n", index + 1, ins.original),
            );
            if ins.keyword == "FROM" {
                let vars: Vars = meta_args
                    .iter()
                    .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                    .collect();
                let words = process_words(&ins.args, &vars).map_err(fail)?;
                let (base, alias) = match words.as_slice() {
                    [base] => (base.clone(), None),
                    [base, as_kw, alias] if as_kw.eq_ignore_ascii_case("as") => {
                        (base.clone(), Some(alias.to_lowercase()))
                    }
                    _ => return Err(fail("FROM requires either one or three arguments")),
                };
                let image = if base == "scratch" {
                    None
                } else {
                    let reference = self.stage_reference(&base);
                    match self.engine.images.get(&reference) {
                        Ok(image) => Some(image),
                        Err(_) => Some(self.pull(&base).await?),
                    }
                };
                let config = image
                    .as_ref()
                    .map(|i| i.config.config.clone())
                    .unwrap_or_default();
                let new = Stage {
                    image,
                    config,
                    args: BTreeMap::new(),
                    shell: vec!["/bin/sh".into(), "-c".into()],
                    cmd_set: false,
                };
                match &new.image {
                    Some(image) => say(self.out, format!(" ---> {}\n", image.short_id())),
                    None => say(self.out, " ---> \n"),
                }
                if let Some(alias) = alias {
                    self.aliases.insert(alias, self.stage_ids.len());
                }
                self.stage_ids.push(new.id());
                stage = Some(new);
                continue;
            }
            let Some(current) = stage.as_mut() else {
                if ins.keyword == "ARG" {
                    for (k, v) in key_values("ARG", &ins.args, &Vars::new()).map_err(fail)? {
                        let value = self.options.build_args.get(&k).cloned().unwrap_or(v);
                        self.used_args.insert(k.clone());
                        meta_args.insert(k, value);
                    }
                    continue;
                }
                return Err(fail(
                    "Please provide a source image with `from` prior to commit",
                ));
            };
            self.step(current, ins, &meta_args).await?;
            let id = current.id();
            say(self.out, format!(" ---> {}\n", short_id(&id)));
            // Keep the stage table pointing at each stage's latest image.
            if let Some(last) = self.stage_ids.last_mut() {
                last.clone_from(&id);
            }
        }
        let stage =
            stage.ok_or_else(|| fail("No image was generated. Is your Dockerfile empty?"))?;
        match stage.image {
            Some(image) => Ok(image.id),
            None => Err(fail("No image was generated. Is your Dockerfile empty?")),
        }
    }

    /// Pulls `FROM`'s image when the store lacks it, streaming progress.
    async fn pull(&self, name: &str) -> Result<Image> {
        let reference = crate::image::reference::Reference::parse(name).map_err(|source| {
            crate::image::Error::InvalidReference {
                reference: name.to_owned(),
                source,
            }
        })?;
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let out = self.out.clone();
        let forward = tokio::spawn(async move {
            while let Some(progress) = receiver.recv().await {
                if let crate::image::pull::Progress::Status { id, status } = progress {
                    let line = match id {
                        Some(id) => format!("{id}: {status}\n"),
                        None => format!("{status}\n"),
                    };
                    say(&out, line);
                }
            }
        });
        let pulled = crate::image::pull::pull(
            self.engine.clone(),
            |engine: &Engine| &engine.images,
            &reference,
            None,
            &sender,
        )
        .await;
        drop(sender);
        let _ = forward.await;
        let pulled = pulled?;
        Ok(self.engine.images.get(&pulled.id)?)
    }

    /// The image a stage name, stage index or image reference names.
    fn stage_reference(&self, name: &str) -> String {
        self.aliases
            .get(&name.to_lowercase())
            .copied()
            .or_else(|| name.parse::<usize>().ok())
            .and_then(|i| self.stage_ids.get(i).cloned())
            .unwrap_or_else(|| name.to_owned())
    }

    /// The merged root of a stage or image, for `COPY --from`.
    fn stage_root(&self, name: &str) -> Result<StageRoot> {
        let reference = self.stage_reference(name);
        let image = self.engine.images.get(&reference).map_err(|_| {
            fail(format!(
                "invalid from flag value {name}: no such stage or image in the store"
            ))
        })?;
        match image.layer_dirs.as_slice() {
            [] => {
                let path = self.scratch.join(format!("from-{}", store::random_name()));
                std::fs::create_dir_all(&path).map_err(Error::io("create", &path))?;
                Ok(StageRoot {
                    path,
                    mounted: false,
                })
            }
            [only] => Ok(StageRoot {
                path: only.clone(),
                mounted: false,
            }),
            layers => {
                let path = self.scratch.join(format!("from-{}", store::random_name()));
                std::fs::create_dir_all(&path).map_err(Error::io("create", &path))?;
                let lower: Vec<String> = layers
                    .iter()
                    .rev()
                    .map(|p| p.display().to_string())
                    .collect();
                let data = format!("lowerdir={}", lower.join(":"));
                nix::mount::mount(
                    Some("overlay"),
                    &path,
                    Some("overlay"),
                    nix::mount::MsFlags::MS_RDONLY,
                    Some(data.as_str()),
                )
                .map_err(|e| Error::Runtime {
                    context: format!("mounting image {} for COPY --from", image.id),
                    source: Some(e.into()),
                })?;
                Ok(StageRoot {
                    path,
                    mounted: true,
                })
            }
        }
    }

    /// Runs one non-FROM instruction, moving `stage` to its result.
    async fn step(
        &mut self,
        stage: &mut Stage,
        ins: &Instruction,
        meta_args: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        let vars = stage.vars();
        match ins.keyword.as_str() {
            "ARG" => {
                for (k, v) in key_values("ARG", &ins.args, &vars).map_err(fail)? {
                    let default = v.or_else(|| meta_args.get(&k).cloned().flatten());
                    let value = self.options.build_args.get(&k).cloned().unwrap_or(default);
                    self.used_args.insert(k.clone());
                    stage.args.insert(k, value);
                }
                self.metadata(stage, ins).await
            }
            "RUN" => self.run_step(stage, ins).await,
            "COPY" | "ADD" => self.copy_step(stage, ins, &vars).await,
            "MAINTAINER" => {
                // Recorded as the image author, like Docker.
                let author = process_word(&ins.args, &vars).map_err(fail)?;
                self.metadata_with_author(stage, ins, Some(author)).await
            }
            "SHELL" => {
                let shell = ins
                    .json
                    .clone()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| fail("SHELL requires the arguments to be in JSON form"))?;
                stage.shell.clone_from(&shell);
                self.metadata(stage, ins).await
            }
            _ => {
                if ins.keyword == "ENTRYPOINT" && !stage.cmd_set {
                    stage.config.cmd = None;
                }
                if ins.keyword == "CMD" {
                    stage.cmd_set = true;
                }
                let shell = stage.shell.clone();
                apply_metadata(&mut stage.config, ins, &vars, &shell).map_err(fail)?;
                self.metadata(stage, ins).await
            }
        }
    }

    async fn metadata(&mut self, stage: &mut Stage, ins: &Instruction) -> Result<()> {
        self.metadata_with_author(stage, ins, None).await
    }

    /// Commits a config-only step (empty layer), through the cache.
    async fn metadata_with_author(
        &mut self,
        stage: &mut Stage,
        ins: &Instruction,
        author: Option<String>,
    ) -> Result<()> {
        let created_by = format!("/bin/sh -c #(nop)  {}", ins.original);
        let config_json = serde_json::to_string(&stage.config).unwrap_or_default();
        let key = cache_key(&stage.id(), &created_by, &config_json);
        if self.use_cache(stage, &key) {
            return Ok(());
        }
        let engine = self.engine.clone();
        let parent = stage.image.clone();
        let config = stage.config.clone();
        let id = tokio::task::spawn_blocking(move || {
            create_image(
                &engine.images,
                ImageSpec {
                    parent: parent.as_ref(),
                    layer: LayerSource::Empty,
                    config,
                    history: History {
                        created_by: Some(created_by),
                        ..History::default()
                    },
                    author,
                    tags: Vec::new(),
                },
            )
        })
        .await
        .map_err(|e| Error::runtime(format!("build task failed: {e}")))??;
        self.advance(stage, &key, &id)
    }

    /// On a cache hit, moves `stage` to the cached image.
    fn use_cache(&self, stage: &mut Stage, key: &str) -> bool {
        if self.options.no_cache {
            return false;
        }
        let Some(id) = self.cache.get(key) else {
            return false;
        };
        let Ok(image) = self.engine.images.get(&id) else {
            return false;
        };
        say(self.out, " ---> Using cache\n");
        stage.config = image.config.config.clone();
        stage.image = Some(image);
        true
    }

    /// Moves `stage` to the new image `id` and remembers it under `key`.
    fn advance(&self, stage: &mut Stage, key: &str, id: &str) -> Result<()> {
        let image = self.engine.images.get(id)?;
        if let Err(err) = self.cache.put(key, id) {
            tracing::warn!(error = %err, "could not record a build cache entry");
        }
        stage.config = image.config.config.clone();
        stage.image = Some(image);
        Ok(())
    }

    async fn run_step(&mut self, stage: &mut Stage, ins: &Instruction) -> Result<()> {
        let argv = command_of(ins, &stage.shell);
        let arg_env = stage.arg_env();
        let created_by = if arg_env.is_empty() {
            argv.join(" ")
        } else {
            format!(
                "|{} {} {}",
                arg_env.len(),
                arg_env.join(" "),
                argv.join(" ")
            )
        };
        let key = cache_key(&stage.id(), &format!("RUN {}", ins.original), &created_by);
        if self.use_cache(stage, &key) {
            return Ok(());
        }
        let Some(image) = stage.image.clone() else {
            return Err(fail(format!(
                "The command '{}' cannot run: the image has no file system (FROM scratch)",
                argv.join(" ")
            )));
        };
        let config = Config {
            image: image.id.clone(),
            cmd: Some(argv.clone()),
            entrypoint: Some(Vec::new()),
            env: arg_env,
            attach_stdout: true,
            attach_stderr: true,
            healthcheck: Some(serde_json::json!({ "Test": ["NONE"] })),
            ..Config::default()
        };
        let record = self
            .engine
            .create_container(None, config, HostConfig::default())?;
        let id = record.id.clone();
        say(self.out, format!(" ---> Running in {}\n", short_id(&id)));
        let result = self.run_container(&id, &argv, stage, &created_by).await;
        let removed = self.engine.remove_container(&id, true, true).await;
        let new_image = result?;
        removed?;
        say(
            self.out,
            format!(" ---> Removed intermediate container {}\n", short_id(&id)),
        );
        self.advance(stage, &key, &new_image)
    }

    /// Starts the RUN container, streams its output, commits it on success.
    async fn run_container(
        &self,
        id: &str,
        argv: &[String],
        stage: &Stage,
        created_by: &str,
    ) -> Result<String> {
        let entry = self.engine.container(id)?;
        let mut output = entry.hub.subscribe();
        let out = self.out.clone();
        let forward = tokio::spawn(async move {
            while let Some(chunk) = output.recv().await {
                say(&out, String::from_utf8_lossy(&chunk.data).into_owned());
            }
        });
        self.engine.start_container(id).await?;
        let code = self
            .engine
            .wait_container(id, WaitCondition::NotRunning)
            .await?;
        // Output is flushed when the process's pipes close; do not wait forever.
        let _ = tokio::time::timeout(Duration::from_secs(10), forward).await;
        if code != 0 {
            return Err(Error::Runtime {
                context: format!(
                    "The command '{}' returned a non-zero code: {code}",
                    argv.join(" ")
                ),
                source: None,
            });
        }
        let engine = self.engine.clone();
        let upper = entry.dir().join("upper");
        let parent = stage.image.clone();
        let config = stage.config.clone();
        let created_by = created_by.to_owned();
        tokio::task::spawn_blocking(move || {
            Ok(create_image(
                &engine.images,
                ImageSpec {
                    parent: parent.as_ref(),
                    layer: LayerSource::Upper(&upper),
                    config,
                    history: History {
                        created_by: Some(created_by),
                        ..History::default()
                    },
                    author: None,
                    tags: Vec::new(),
                },
            )?)
        })
        .await
        .map_err(|e| Error::runtime(format!("build task failed: {e}")))?
    }

    async fn copy_step(&mut self, stage: &mut Stage, ins: &Instruction, vars: &Vars) -> Result<()> {
        let add = ins.keyword == "ADD";
        let from = match ins.flag("from") {
            Some(_) if add => return Err(fail("ADD does not support --from")),
            Some(name) => Some(self.stage_root(&process_word(name, vars).map_err(fail)?)?),
            None => None,
        };
        let mut words = match &ins.json {
            Some(words) => words
                .iter()
                .map(|w| process_word(w, vars))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(fail)?,
            None => process_words(&ins.args, vars).map_err(fail)?,
        };
        if words.len() < 2 {
            return Err(fail(format!(
                "{} requires at least two arguments",
                ins.keyword
            )));
        }
        let dest = words.pop().unwrap_or_default();
        let owner = match ins.flag("chown") {
            Some(spec) => {
                let spec = process_word(spec, vars).map_err(fail)?;
                resolve_owner(stage.image.as_ref(), &spec)?
            }
            None => (0, 0),
        };
        let chmod = match ins.flag("chmod") {
            Some(mode) => Some(
                u32::from_str_radix(mode, 8)
                    .map_err(|_| fail(format!("invalid chmod {mode:?}: not an octal mode")))?,
            ),
            None => None,
        };
        let workdir = if stage.config.working_dir.is_empty() {
            "/".to_owned()
        } else {
            stage.config.working_dir.clone()
        };
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{workdir}/{dest}")
        };
        let dest_is_dir = dest.ends_with('/') || dest == "." || words.len() > 1;
        let (context, ignore) = match &from {
            Some(root) => (root.path.clone(), dockerignore::Matcher::default()),
            None => (self.context.clone(), self.ignore.clone()),
        };
        let layers = stage
            .image
            .as_ref()
            .map(|i| i.layer_dirs.clone())
            .unwrap_or_default();
        let tar_path = self
            .scratch
            .join(format!("copy-{}.tar", store::random_name()));
        let keyword = ins.keyword.clone();
        let tar_for_task = tar_path.clone();
        let content_hash = tokio::task::spawn_blocking(move || {
            let plan = CopyPlan {
                context: &context,
                ignore: &ignore,
                layers: &layers,
                owner,
                chmod,
                add,
                keyword: &keyword,
            };
            plan.write(&words, &dest_abs, dest_is_dir, &tar_for_task)
        })
        .await
        .map_err(|e| Error::runtime(format!("build task failed: {e}")))??;
        drop(from);
        let key = cache_key(&stage.id(), &ins.original, &content_hash);
        if self.use_cache(stage, &key) {
            let _ = std::fs::remove_file(&tar_path);
            return Ok(());
        }
        let engine = self.engine.clone();
        let parent = stage.image.clone();
        let config = stage.config.clone();
        let created_by = format!(
            "/bin/sh -c #(nop) {} file:{} in {dest} ",
            ins.keyword,
            &content_hash[..content_hash.len().min(64)]
        );
        let id = tokio::task::spawn_blocking(move || -> Result<String> {
            let file = std::fs::File::open(&tar_path).map_err(Error::io("open", &tar_path))?;
            let id = create_image(
                &engine.images,
                ImageSpec {
                    parent: parent.as_ref(),
                    layer: LayerSource::Tar(Box::new(file)),
                    config,
                    history: History {
                        created_by: Some(created_by),
                        ..History::default()
                    },
                    author: None,
                    tags: Vec::new(),
                },
            )?;
            let _ = std::fs::remove_file(&tar_path);
            Ok(id)
        })
        .await
        .map_err(|e| Error::runtime(format!("build task failed: {e}")))??;
        self.advance(stage, &key, &id)
    }
}

/// A stage's root file system, mounted for `COPY --from` while it lives.
struct StageRoot {
    path: PathBuf,
    mounted: bool,
}

impl Drop for StageRoot {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Resolves `--chown=user[:group]` (names through the image's
/// `/etc/passwd` and `/etc/group`).
fn resolve_owner(image: Option<&Image>, spec: &str) -> Result<(u64, u64)> {
    let (user, group) = spec
        .split_once(':')
        .map_or((spec, None), |(u, g)| (u, Some(g)));
    let layers: Vec<PathBuf> = image.map(|i| i.layer_dirs.clone()).unwrap_or_default();
    let lookup = |file: &str, name: &str| -> Result<(u64, Option<u64>)> {
        if let Ok(id) = name.parse::<u64>() {
            return Ok((id, None));
        }
        let text = layers
            .iter()
            .rev()
            .find_map(|l| std::fs::read_to_string(l.join(file)).ok())
            .unwrap_or_default();
        text.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| {
                let id = f.get(2)?.parse().ok()?;
                let gid = f.get(3).and_then(|g| g.parse().ok());
                Some((id, gid))
            })
            .ok_or_else(|| {
                fail(format!(
                    "unable to find user {name}: no matching entries in {file}"
                ))
            })
    };
    let (uid, primary) = lookup("etc/passwd", user)?;
    let gid = match group {
        Some(group) => lookup("etc/group", group)?.0,
        None => primary.unwrap_or(uid),
    };
    Ok((uid, gid))
}

/// What COPY/ADD copies and how.
struct CopyPlan<'a> {
    context: &'a Path,
    ignore: &'a dockerignore::Matcher,
    /// The current image's layer dirs (for existing destination dirs).
    layers: &'a [PathBuf],
    owner: (u64, u64),
    chmod: Option<u32>,
    add: bool,
    keyword: &'a str,
}

impl CopyPlan<'_> {
    /// Writes the layer tar to `tar_path`; returns the content hash.
    fn write(
        &self,
        sources: &[String],
        dest: &str,
        dest_is_dir: bool,
        tar_path: &Path,
    ) -> Result<String> {
        let file = std::fs::File::create(tar_path).map_err(Error::io("create", tar_path))?;
        let mut tar = tar::Builder::new(io::BufWriter::new(file));
        let mut hasher = Sha256::new();
        let mut matched: Vec<String> = Vec::new();
        for source in sources {
            if source.contains("://") {
                return Err(fail(format!(
                    "{} from a URL ({source}) is not supported by berth's legacy builder",
                    self.keyword
                )));
            }
            let cleaned = clean_relative(source).ok_or_else(|| {
                fail(format!(
                    "{} failed: forbidden path outside the build context: {source}",
                    self.keyword
                ))
            })?;
            let found = self.expand_source(&cleaned);
            if found.is_empty() {
                return Err(fail(format!(
                    "{} failed: file not found in build context or excluded by .dockerignore: stat {cleaned}: file does not exist",
                    self.keyword
                )));
            }
            matched.extend(found);
        }
        let dest_is_dir = dest_is_dir || matched.len() > 1;
        let dest = clean_absolute(dest);
        let dest_rel = dest.trim_start_matches('/').to_owned();
        let mut emitted = BTreeSet::new();
        let io_err = |e: io::Error| Error::io("write the layer of", tar_path.to_owned())(e);
        for source in &matched {
            let path = self.host(source);
            let meta = std::fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
            if meta.is_dir() {
                self.parents(&mut tar, &dest_rel, true, &mut emitted)
                    .map_err(io_err)?;
                self.walk(
                    &mut tar,
                    &mut hasher,
                    &path,
                    source,
                    &dest_rel,
                    &mut emitted,
                )
                .map_err(io_err)?;
                continue;
            }
            let target = if dest_is_dir || dest_rel.is_empty() {
                let name = Path::new(source)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                join_rel(&dest_rel, &name)
            } else {
                dest_rel.clone()
            };
            if self.add && meta.is_file() && is_archive(&path) {
                self.parents(&mut tar, &dest_rel, true, &mut emitted)
                    .map_err(io_err)?;
                self.extract(&mut tar, &mut hasher, &path, &dest_rel)
                    .map_err(io_err)?;
                continue;
            }
            let parent = Path::new(&target)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.parents(&mut tar, &parent, true, &mut emitted)
                .map_err(io_err)?;
            self.append(&mut tar, &mut hasher, &path, &meta, &target)
                .map_err(io_err)?;
        }
        tar.into_inner()
            .map_err(io_err)?
            .into_inner()
            .map_err(|e| io_err(e.into_error()))?
            .sync_all()
            .map_err(io_err)?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// The host path of context path `rel`, symlinks resolved inside the
    /// context (a link to `/` means the context root, never the guest's).
    fn host(&self, rel: &str) -> PathBuf {
        crate::runtime::resolve_in_root(self.context, rel)
    }

    /// The context entries `source` names (wildcards in the last component).
    fn expand_source(&self, source: &str) -> Vec<String> {
        let visible = |rel: &str| rel.is_empty() || !self.ignore.excluded(rel);
        if !source.contains(['*', '?', '[']) {
            let exists = std::fs::symlink_metadata(self.host(source)).is_ok();
            return if exists && visible(source) {
                vec![source.to_owned()]
            } else {
                Vec::new()
            };
        }
        let (dir, pattern) = source.rsplit_once('/').unwrap_or(("", source));
        let Ok(entries) = std::fs::read_dir(self.host(dir)) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| dockerignore::glob(pattern.as_bytes(), name.as_bytes()))
            .map(|name| join_rel(dir, &name))
            .filter(|rel| visible(rel))
            .collect();
        out.sort();
        out
    }

    /// Emits `rel`'s ancestors (and `rel` itself when `include_self`) as
    /// directories, keeping the mode and owner the image already has.
    fn parents<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        rel: &str,
        include_self: bool,
        emitted: &mut BTreeSet<String>,
    ) -> io::Result<()> {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        let count = if include_self {
            parts.len()
        } else {
            parts.len().saturating_sub(1)
        };
        for n in 1..=count {
            let dir = parts[..n].join("/");
            if !emitted.insert(dir.clone()) {
                continue;
            }
            let existing = self.layers.iter().rev().find_map(|l| {
                std::fs::symlink_metadata(l.join(&dir))
                    .ok()
                    .filter(|m| m.is_dir())
            });
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            match existing {
                Some(meta) => {
                    header.set_mode(meta.mode() & 0o7777);
                    header.set_uid(u64::from(meta.uid()));
                    header.set_gid(u64::from(meta.gid()));
                    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
                }
                None => {
                    header.set_mode(0o755);
                    let is_dest = n == parts.len();
                    let (uid, gid) = if is_dest { self.owner } else { (0, 0) };
                    header.set_uid(uid);
                    header.set_gid(gid);
                    header.set_mtime(0);
                }
            }
            tar.append_data(&mut header, format!("{dir}/"), io::empty())?;
        }
        Ok(())
    }

    /// Copies the context directory `source` (its content) to `dest`.
    fn walk<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        hasher: &mut Sha256,
        dir: &Path,
        source: &str,
        dest: &str,
        emitted: &mut BTreeSet<String>,
    ) -> io::Result<()> {
        let mut names: Vec<String> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let rel = join_rel(source, &name);
            if self.ignore.excluded(&rel) && !self.ignore.has_exceptions() {
                continue;
            }
            let path = dir.join(&name);
            let meta = std::fs::symlink_metadata(&path)?;
            let target = join_rel(dest, &name);
            if meta.is_dir() {
                if !self.ignore.excluded(&rel) {
                    emitted.insert(target.clone());
                    self.append(tar, hasher, &path, &meta, &target)?;
                }
                self.walk(tar, hasher, &path, &rel, &target, emitted)?;
            } else if !self.ignore.excluded(&rel) {
                self.append(tar, hasher, &path, &meta, &target)?;
            }
        }
        Ok(())
    }

    /// Appends one context entry as `target`, owned by the plan's owner.
    fn append<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        hasher: &mut Sha256,
        path: &Path,
        meta: &std::fs::Metadata,
        target: &str,
    ) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        header.set_uid(self.owner.0);
        header.set_gid(self.owner.1);
        let mode = match self.chmod {
            Some(mode) => mode,
            None => meta.permissions().mode() & 0o7777,
        };
        header.set_mode(mode);
        hasher.update(target.as_bytes());
        hasher.update(format!(":{mode:o}:{}:{}:", self.owner.0, self.owner.1).as_bytes());
        let kind = meta.file_type();
        if kind.is_dir() {
            header.set_size(0);
            return tar.append_data(&mut header, format!("{target}/"), io::empty());
        }
        if kind.is_symlink() {
            let link = std::fs::read_link(path)?;
            hasher.update(link.as_os_str().as_encoded_bytes());
            header.set_size(0);
            return tar.append_link(&mut header, target, link);
        }
        if kind.is_file() {
            let mut content = Vec::new();
            std::fs::File::open(path)?.read_to_end(&mut content)?;
            hasher.update(&content);
            return tar.append_data(&mut header, target, content.as_slice());
        }
        Ok(())
    }

    /// `ADD` of a local archive: its entries below `dest`.
    fn extract<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        hasher: &mut Sha256,
        path: &Path,
        dest: &str,
    ) -> io::Result<()> {
        let mut raw = Vec::new();
        std::fs::File::open(path)?.read_to_end(&mut raw)?;
        hasher.update(&raw);
        let reader = store::decompress(io::BufReader::new(raw.as_slice()))?;
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let entry = entry?;
            let Some(name) = clean_relative(&String::from_utf8_lossy(&entry.path_bytes())) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            let target = join_rel(dest, &name);
            let mut header = entry.header().clone();
            let kind = header.entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let link = entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                let link = if kind.is_hard_link() {
                    join_rel(dest, &clean_relative(&link).unwrap_or_default())
                } else {
                    link
                };
                tar.append_link(&mut header, &target, link)?;
            } else if kind.is_dir() {
                tar.append_data(&mut header, format!("{target}/"), io::empty())?;
            } else if kind.is_file() || kind == tar::EntryType::Continuous {
                tar.append_data(&mut header, &target, entry)?;
            }
        }
        Ok(())
    }
}

fn join_rel(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{}/{name}", base.trim_end_matches('/'))
    }
}

/// Whether the file at `path` is a (possibly compressed) tar archive.
fn is_archive(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(mut reader) = store::decompress(io::BufReader::new(file)) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled == 512 && &head[257..262] == b"ustar"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(text: &str) -> Instruction {
        dockerfile::parse(text).unwrap().remove(0)
    }

    #[test]
    fn apply_change_sets_cmd_env_and_ports() {
        let mut config = ContainerConfig::default();
        apply_change(&mut config, "CMD [\"/bin/true\"]").unwrap();
        apply_change(&mut config, "ENV A=1").unwrap();
        apply_change(&mut config, "EXPOSE 80 53/udp").unwrap();
        assert_eq!(config.cmd, Some(vec!["/bin/true".to_owned()]));
        assert_eq!(config.env, Some(vec!["A=1".to_owned()]));
        let ports: Vec<&String> = config.exposed_ports.as_ref().unwrap().keys().collect();
        assert_eq!(ports, vec!["53/udp", "80/tcp"]);
    }

    #[test]
    fn apply_change_rejects_run() {
        let mut config = ContainerConfig::default();
        assert!(apply_change(&mut config, "RUN true").is_err());
    }

    #[test]
    fn workdir_is_relative_to_the_previous_one() {
        let mut config = ContainerConfig::default();
        let shell = vec!["/bin/sh".to_owned(), "-c".to_owned()];
        apply_metadata(&mut config, &ins("WORKDIR /app"), &Vars::new(), &shell).unwrap();
        apply_metadata(
            &mut config,
            &ins("WORKDIR sub/../src"),
            &Vars::new(),
            &shell,
        )
        .unwrap();
        assert_eq!(config.working_dir, "/app/src");
    }

    #[test]
    fn shell_form_cmd_runs_under_the_shell() {
        let shell = vec!["/bin/sh".to_owned(), "-c".to_owned()];
        assert_eq!(
            command_of(&ins("CMD echo hi"), &shell),
            vec!["/bin/sh", "-c", "echo hi"]
        );
    }

    #[test]
    fn healthcheck_flags_become_nanoseconds() {
        let mut config = ContainerConfig::default();
        let shell = vec!["/bin/sh".to_owned(), "-c".to_owned()];
        apply_metadata(
            &mut config,
            &ins("HEALTHCHECK --interval=1m30s --retries=2 CMD true"),
            &Vars::new(),
            &shell,
        )
        .unwrap();
        let check = config.healthcheck.unwrap();
        assert_eq!(check["Interval"], 90_000_000_000u64);
        assert_eq!(check["Retries"], 2);
        assert_eq!(check["Test"], serde_json::json!(["CMD-SHELL", "true"]));
    }

    #[test]
    fn clean_relative_refuses_to_leave_the_context() {
        assert_eq!(clean_relative("./a/../b"), Some("b".to_owned()));
        assert_eq!(clean_relative("../x"), None);
    }

    #[test]
    fn cache_keys_depend_on_every_part() {
        assert_ne!(cache_key("a", "RUN x", ""), cache_key("a", "RUN y", ""));
        assert_ne!(cache_key("a", "RUN x", ""), cache_key("b", "RUN x", ""));
        assert_eq!(cache_key("a", "RUN x", "h"), cache_key("a", "RUN x", "h"));
    }
}
