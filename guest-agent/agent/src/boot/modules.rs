//! Loading kernel modules without `modprobe`.
//!
//! The image builder ran `depmod` on the staged module tree, so
//! `/lib/modules/<release>/modules.dep` lists every shipped module with the
//! full (transitive) set of modules it needs. [`ModuleIndex::load`] takes
//! the closure of the requested names and loads each file with
//! `finit_module(2)`, on one thread per CPU: a module starts as soon as all
//! of its dependencies are in, so independent chains (block, vsock, FUSE)
//! initialise side by side. This replaced one `busybox modprobe -a` (a
//! fork/exec plus strictly serial loading) on the boot path.

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use nix::kmod::ModuleInitFlags;

const MODULES_ROOT: &str = "/lib/modules";

/// The image's `modules.dep`, by module name.
#[derive(Debug)]
pub(super) struct ModuleIndex {
    dir: PathBuf,
    /// `/sys/module`: an entry per loaded module, and per built-in one that
    /// has parameters or a version.
    sys_module: PathBuf,
    /// name -> (path relative to `dir`, names of every module it needs)
    modules: HashMap<String, (PathBuf, Vec<String>)>,
}

/// `kernel/fs/fuse/virtiofs.ko` -> `virtiofs`; dashes become underscores,
/// as the kernel names modules.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".ko").unwrap_or(file).replace('-', "_")
}

impl ModuleIndex {
    /// Reads `modules.dep` of the running kernel.
    pub(super) fn open() -> Result<Self> {
        let release = nix::sys::utsname::uname()
            .context("uname")?
            .release()
            .to_string_lossy()
            .into_owned();
        Self::read(&Path::new(MODULES_ROOT).join(release))
    }

    pub(super) fn read(dir: &Path) -> Result<Self> {
        let dep = dir.join("modules.dep");
        let text =
            std::fs::read_to_string(&dep).with_context(|| format!("reading {}", dep.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            sys_module: PathBuf::from("/sys/module"),
            modules: parse_modules_dep(&text),
        })
    }

    /// Every module `names` need that is not loaded yet, those that others
    /// wait for first (most dependents), so that the chains that gate the
    /// most start earliest. A name that is neither shipped nor built into
    /// the kernel is an error.
    fn closure(&self, names: &[&str]) -> Result<Vec<String>> {
        let mut wanted = BTreeSet::new();
        for name in names {
            let name = name.replace('-', "_");
            match self.modules.get(&name) {
                Some((_, deps)) => {
                    if let Some(missing) = deps.iter().find(|d| !self.modules.contains_key(*d)) {
                        bail!(
                            "kernel module {name} needs {missing}, which is not in {}/modules.dep",
                            self.dir.display()
                        );
                    }
                    wanted.insert(name.clone());
                    wanted.extend(deps.iter().cloned());
                }
                None if self.is_loaded(&name) => {}
                None => bail!(
                    "kernel module {name} is not in {}/modules.dep",
                    self.dir.display()
                ),
            }
        }
        wanted.retain(|name| !self.is_loaded(name));
        let dependents = |module: &String| {
            wanted
                .iter()
                .filter(|w| self.modules[*w].1.contains(module))
                .count()
        };
        let mut ordered: Vec<(usize, String)> =
            wanted.iter().map(|m| (dependents(m), m.clone())).collect();
        ordered.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        Ok(ordered.into_iter().map(|(_, m)| m).collect())
    }

    fn is_loaded(&self, name: &str) -> bool {
        self.sys_module.join(name).exists()
    }

    /// Loads `names` and their dependencies; already loaded modules are
    /// fine. Loads in parallel on `threads` threads where dependencies
    /// allow; stops at the first failure and reports it.
    pub(super) fn load(&self, names: &[&str], threads: usize) -> Result<()> {
        self.load_with(names, threads, |path| {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            match nix::kmod::finit_module(&file, &CString::default(), ModuleInitFlags::empty()) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
                Err(err) => Err(anyhow!("finit_module {}: {err}", path.display())),
            }
        })
    }

    /// [`Self::load`] with `insert` doing the loading of one file.
    fn load_with(
        &self,
        names: &[&str],
        threads: usize,
        insert: impl Fn(&Path) -> Result<()> + Sync,
    ) -> Result<()> {
        let pending = self.closure(names)?;
        if pending.is_empty() {
            return Ok(());
        }
        // The closure holds every dependency not loaded yet, so the others
        // are in already (by PID 1, or an earlier call).
        let loaded = pending
            .iter()
            .flat_map(|name| self.modules[name].1.iter())
            .filter(|dep| !pending.contains(dep))
            .cloned()
            .collect();
        let state = Mutex::new(LoadState {
            pending,
            loaded,
            running: 0,
            failed: None,
        });
        let changed = Condvar::new();
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| self.worker(&state, &changed, &insert));
            }
        });
        let state = state
            .into_inner()
            .map_err(|_| anyhow!("module loader panicked"))?;
        match state.failed {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn worker(
        &self,
        state: &Mutex<LoadState>,
        changed: &Condvar,
        insert: &(impl Fn(&Path) -> Result<()> + Sync),
    ) {
        let mut guard = state.lock().expect("invariant: no panics while locked");
        loop {
            if guard.failed.is_some() || (guard.pending.is_empty() && guard.running == 0) {
                changed.notify_all();
                return;
            }
            let next = guard.pending.iter().position(|name| {
                self.modules[name]
                    .1
                    .iter()
                    .all(|dep| guard.loaded.contains(dep))
            });
            let Some(index) = next else {
                guard = changed
                    .wait(guard)
                    .expect("invariant: no panics while locked");
                continue;
            };
            let name = guard.pending.remove(index);
            guard.running += 1;
            drop(guard);
            let path = self.dir.join(&self.modules[&name].0);
            let started = std::time::Instant::now();
            let result = insert(&path).with_context(|| format!("loading kernel module {name}"));
            tracing::debug!(module = name, ms = started.elapsed().as_millis(), "loaded");
            guard = state.lock().expect("invariant: no panics while locked");
            guard.running -= 1;
            match result {
                Ok(()) => {
                    guard.loaded.insert(name);
                }
                Err(err) => guard.failed = Some(err),
            }
            changed.notify_all();
        }
    }
}

struct LoadState {
    pending: Vec<String>,
    loaded: BTreeSet<String>,
    running: usize,
    failed: Option<anyhow::Error>,
}

/// `path: dep dep ...` lines -> name -> (path, dependency names).
fn parse_modules_dep(text: &str) -> HashMap<String, (PathBuf, Vec<String>)> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(path, deps)| {
            let path = path.trim();
            (
                module_name(path),
                (
                    PathBuf::from(path),
                    deps.split_whitespace().map(module_name).collect(),
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio_ring.ko\n\
kernel/fs/fuse/fuse.ko:\n\
kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko\n\
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko\n\
kernel/net/vmw_vsock/vsock.ko:\n\
kernel/net/dummy-mod.ko:\n";

    fn index() -> ModuleIndex {
        ModuleIndex {
            dir: PathBuf::from("/lib/modules/test"),
            sys_module: PathBuf::from("/nonexistent/sys/module"),
            modules: parse_modules_dep(DEP),
        }
    }

    #[test]
    fn names_follow_the_kernel_convention() {
        assert_eq!(module_name("kernel/net/dummy-mod.ko"), "dummy_mod");
        assert_eq!(module_name("virtiofs.ko"), "virtiofs");
    }

    #[test]
    fn closure_adds_transitive_dependencies_once() {
        let closure = index()
            .closure(&[
                "virtiofs",
                "vmw_vsock_virtio_transport",
                "fuse",
                "dummy-mod",
            ])
            .unwrap();
        // Most dependents first, then by name.
        assert_eq!(
            closure,
            [
                "vsock",
                "fuse",
                "virtio_ring",
                "vmw_vsock_virtio_transport_common",
                "dummy_mod",
                "virtiofs",
                "vmw_vsock_virtio_transport",
            ]
        );
    }

    #[test]
    fn unknown_module_is_named_in_the_error() {
        let err = index().closure(&["no_such_module_xyz"]).unwrap_err();
        assert!(
            err.to_string().contains(
                "kernel module no_such_module_xyz is not in /lib/modules/test/modules.dep"
            ),
            "{err}"
        );
    }

    #[test]
    fn each_module_loads_after_its_dependencies() {
        let index = index();
        for threads in [1, 2, 4] {
            let order = Mutex::new(Vec::new());
            index
                .load_with(
                    &["virtiofs", "vmw_vsock_virtio_transport", "dummy_mod"],
                    threads,
                    |path| {
                        let name = module_name(&path.to_string_lossy());
                        let mut order = order.lock().unwrap();
                        for dep in &index.modules[&name].1 {
                            assert!(order.contains(dep), "{name} before its dependency {dep}");
                        }
                        order.push(name);
                        Ok(())
                    },
                )
                .unwrap();
            assert_eq!(order.into_inner().unwrap().len(), 7);
        }
    }

    #[test]
    fn a_failed_module_stops_its_dependents_and_is_reported() {
        let index = index();
        let loaded = Mutex::new(Vec::new());
        let err = index
            .load_with(&["virtiofs"], 2, |path| {
                let name = module_name(&path.to_string_lossy());
                if name == "fuse" {
                    bail!("no memory");
                }
                loaded.lock().unwrap().push(name);
                Ok(())
            })
            .unwrap_err();
        assert_eq!(format!("{err:#}"), "loading kernel module fuse: no memory");
        assert!(
            !loaded
                .into_inner()
                .unwrap()
                .contains(&"virtiofs".to_owned())
        );
    }

    #[test]
    fn a_dependency_missing_from_modules_dep_is_an_error() {
        let index = ModuleIndex {
            modules: parse_modules_dep("a.ko: b.ko\n"),
            ..index()
        };
        let err = index.closure(&["a"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel module a needs b, which is not in /lib/modules/test/modules.dep"
        );
    }

    #[test]
    fn loaded_and_built_in_modules_are_skipped() {
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir(sys.path().join("vsock")).unwrap();
        std::fs::create_dir(sys.path().join("builtin_thing")).unwrap();
        let index = ModuleIndex {
            sys_module: sys.path().to_owned(),
            ..index()
        };
        let closure = index
            .closure(&["vmw_vsock_virtio_transport", "builtin_thing"])
            .unwrap();
        assert_eq!(
            closure,
            [
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport"
            ]
        );
    }

    #[test]
    fn dependencies_loaded_earlier_do_not_hold_up_their_dependents() {
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir(sys.path().join("vsock")).unwrap();
        let index = ModuleIndex {
            sys_module: sys.path().to_owned(),
            ..index()
        };
        let loaded = Mutex::new(Vec::new());
        index
            .load_with(&["vmw_vsock_virtio_transport"], 2, |path| {
                loaded
                    .lock()
                    .unwrap()
                    .push(module_name(&path.to_string_lossy()));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            loaded.into_inner().unwrap(),
            [
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport"
            ]
        );
    }

    #[test]
    fn dependencies_are_listed_with_their_paths() {
        let index = index();
        let (path, deps) = &index.modules["vmw_vsock_virtio_transport"];
        assert_eq!(
            path,
            Path::new("kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko")
        );
        assert_eq!(deps, &["vmw_vsock_virtio_transport_common", "vsock"]);
    }
}
