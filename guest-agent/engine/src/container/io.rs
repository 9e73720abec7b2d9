//! Container output: fan-out to attached clients, and the on-disk log.
//!
//! The engine reads the container's stdout/stderr (or its pty) in pump
//! tasks. Every chunk goes to the [`OutputHub`] (one bounded channel per
//! attached client: a slow client slows the pump instead of losing bytes,
//! as with dockerd) and to the [`LogFile`], which stores Docker json-file
//! lines (`{"log":..,"stream":..,"time":..}`) and feeds `logs --follow`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc};

use crate::{Error, Result};

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A piece of output.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub stream: Stream,
    pub data: Bytes,
}

/// Fan-out of live output to attached clients.
#[derive(Debug, Default)]
pub struct OutputHub {
    subscribers: Mutex<Vec<mpsc::Sender<Chunk>>>,
}

impl OutputHub {
    /// A receiver for all output from now until the process exits.
    pub fn subscribe(&self) -> mpsc::Receiver<Chunk> {
        let (tx, rx) = mpsc::channel(64);
        self.lock().push(tx);
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::Sender<Chunk>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delivers `chunk` to every subscriber, waiting for room; drops
    /// subscribers that went away.
    pub async fn send(&self, chunk: Chunk) {
        let subscribers: Vec<_> = self.lock().clone();
        let mut gone = false;
        for tx in subscribers {
            if tx.send(chunk.clone()).await.is_err() {
                gone = true;
            }
        }
        if gone {
            self.lock().retain(|tx| !tx.is_closed());
        }
    }

    /// Ends every subscription (the process exited).
    pub fn close(&self) {
        self.lock().clear();
    }
}

/// One json-file log line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    pub log: String,
    pub stream: Stream,
    /// RFC 3339 with nanoseconds.
    pub time: String,
}

impl LogEntry {
    /// Nanoseconds since the epoch, for `since`/`until` filtering.
    pub fn time_nanos(&self) -> i64 {
        chrono::DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or_default()
    }
}

/// The container's log file plus live followers.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    state: tokio::sync::Mutex<LogWriter>,
    live: broadcast::Sender<LogEntry>,
}

#[derive(Debug, Default)]
struct LogWriter {
    file: Option<tokio::fs::File>,
    /// Bytes of an unfinished line, per stream.
    partial: [Vec<u8>; 2],
}

/// Longest line kept whole; longer output is split, as json-file does.
const MAX_LINE: usize = 16 * 1024;

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl LogFile {
    pub fn new(path: &Path) -> Self {
        let (live, _) = broadcast::channel(1024);
        Self {
            path: path.to_owned(),
            state: tokio::sync::Mutex::new(LogWriter::default()),
            live,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends output; complete lines are written, the rest waits for more.
    pub async fn write(&self, chunk: &Chunk) -> Result<()> {
        let mut state = self.state.lock().await;
        let index = stream_index(chunk.stream);
        state.partial[index].extend_from_slice(&chunk.data);
        let mut entries = Vec::new();
        loop {
            let buffer = &mut state.partial[index];
            let cut = match buffer.iter().position(|b| *b == b'\n') {
                Some(pos) => pos + 1,
                None if buffer.len() >= MAX_LINE => MAX_LINE,
                None => break,
            };
            let line: Vec<u8> = buffer.drain(..cut).collect();
            entries.push(entry(chunk.stream, &line));
        }
        self.append(&mut state, entries).await
    }

    /// Writes whatever partial lines remain (the streams ended).
    pub async fn flush(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        let mut entries = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut state.partial[stream_index(stream)]);
            if !rest.is_empty() {
                entries.push(entry(stream, &rest));
            }
        }
        self.append(&mut state, entries).await?;
        if let Some(file) = state.file.as_mut() {
            file.flush()
                .await
                .map_err(Error::io("flush log", &self.path))?;
        }
        Ok(())
    }

    async fn append(&self, state: &mut LogWriter, entries: Vec<LogEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if state.file.is_none() {
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(Error::io("open log", &self.path))?;
            state.file = Some(file);
        }
        let mut bytes = Vec::new();
        for e in &entries {
            serde_json::to_writer(&mut bytes, e)
                .map_err(|e| Error::runtime(format!("encoding a log entry: {e}")))?;
            bytes.push(b'\n');
        }
        if let Some(file) = state.file.as_mut() {
            file.write_all(&bytes)
                .await
                .map_err(Error::io("write log", &self.path))?;
        }
        for e in entries {
            let _ = self.live.send(e);
        }
        Ok(())
    }

    /// All entries written so far and a receiver for every later one, with
    /// nothing lost or doubled in between.
    pub async fn snapshot_and_follow(
        &self,
    ) -> Result<(Vec<LogEntry>, broadcast::Receiver<LogEntry>)> {
        let state = self.state.lock().await;
        let receiver = self.live.subscribe();
        let entries = self.read_all().await?;
        drop(state);
        Ok((entries, receiver))
    }

    /// All entries on disk.
    pub async fn read_all(&self) -> Result<Vec<LogEntry>> {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read log", &self.path)(e)),
        };
        Ok(bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect())
    }
}

fn entry(stream: Stream, line: &[u8]) -> LogEntry {
    LogEntry {
        log: String::from_utf8_lossy(line).into_owned(),
        stream,
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stream: Stream, data: &'static [u8]) -> Chunk {
        Chunk {
            stream,
            data: Bytes::from_static(data),
        }
    }

    #[tokio::test]
    async fn log_splits_lines_and_keeps_partial_until_flush() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::new(&dir.path().join("log"));
        log.write(&chunk(Stream::Stdout, b"one\ntw")).await.unwrap();
        log.write(&chunk(Stream::Stderr, b"err\n")).await.unwrap();
        assert_eq!(log.read_all().await.unwrap().len(), 2);
        log.write(&chunk(Stream::Stdout, b"o")).await.unwrap();
        log.flush().await.unwrap();
        let entries = log.read_all().await.unwrap();
        let texts: Vec<_> = entries.iter().map(|e| (e.stream, e.log.as_str())).collect();
        assert_eq!(
            texts,
            vec![
                (Stream::Stdout, "one\n"),
                (Stream::Stderr, "err\n"),
                (Stream::Stdout, "two")
            ]
        );
    }

    #[tokio::test]
    async fn follower_sees_only_later_entries() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::new(&dir.path().join("log"));
        log.write(&chunk(Stream::Stdout, b"before\n"))
            .await
            .unwrap();
        let (past, mut live) = log.snapshot_and_follow().await.unwrap();
        log.write(&chunk(Stream::Stdout, b"after\n")).await.unwrap();
        assert_eq!(past.len(), 1);
        assert_eq!(live.recv().await.unwrap().log, "after\n");
    }
}
