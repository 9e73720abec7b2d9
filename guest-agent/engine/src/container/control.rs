//! Operations on a running container's processes: pause, unpause, top, resize.

use super::{Status, set_window_size};
use crate::{Engine, Error, Result};

impl Engine {
    /// Freezes every process of a running container.
    pub fn pause_container(&self, key: &str) -> Result<()> {
        let entry = self.containers.find(key)?;
        let status = entry.lock().state.status;
        match status {
            Status::Running => {}
            Status::Paused => {
                return Err(Error::Conflict(format!(
                    "container {} is already paused",
                    entry.id()
                )));
            }
            _ => {
                return Err(Error::Conflict(format!(
                    "container {} is not running",
                    entry.id()
                )));
            }
        }
        self.cgroups.freeze(&entry.id(), true)?;
        entry.lock().state.status = Status::Paused;
        entry.persist()?;
        self.publish_container("pause", &entry.snapshot());
        Ok(())
    }

    /// Thaws a paused container.
    pub fn unpause_container(&self, key: &str) -> Result<()> {
        let entry = self.containers.find(key)?;
        if entry.lock().state.status != Status::Paused {
            return Err(Error::Conflict(format!(
                "container {} is not paused",
                entry.id()
            )));
        }
        self.cgroups.freeze(&entry.id(), false)?;
        entry.lock().state.status = Status::Running;
        entry.persist()?;
        self.publish_container("unpause", &entry.snapshot());
        Ok(())
    }

    /// Processes of a running container: titles and rows, like `ps -ef`.
    pub fn top_container(&self, key: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let entry = self.containers.find(key)?;
        if entry.running_pid().is_none() {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                entry.id()
            )));
        }
        let titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
            .map(str::to_owned)
            .to_vec();
        let mut pids = self.cgroups.pids(&entry.id());
        pids.sort_unstable();
        let rows = pids.into_iter().filter_map(process_row).collect();
        Ok((titles, rows))
    }

    /// Sets the terminal size of a container's TTY.
    pub fn resize_container(&self, key: &str, height: u16, width: u16) -> Result<()> {
        let entry = self.containers.find(key)?;
        let pty = entry.live().pty.clone();
        match pty {
            Some(pty) => set_window_size(&pty, height, width),
            None => Err(Error::Conflict(format!(
                "container {} has no TTY or is not running",
                entry.id()
            ))),
        }
    }
}

/// One `ps`-style row for `pid`.
pub(super) fn process_row(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ppid = fields.get(1)?.to_string();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let secs = ticks / 100;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("0");
    let uid = if uid == "0" {
        "root".to_owned()
    } else {
        uid.to_owned()
    };
    Some(vec![
        uid,
        pid.to_string(),
        ppid,
        "0".into(),
        "-".into(),
        "?".into(),
        format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
        cmd,
    ])
}
