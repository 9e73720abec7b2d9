//! How the host agent tells `berth start` how booting goes.
//!
//! `berth start` spawns the agent with a pipe as its stdout and reads one
//! line per event until `ready`, `error ...`, `failed ...` or EOF (the agent
//! died). After `ready` the agent writes nothing more there and `berth
//! start` exits. Texts may span lines: `\` and newlines are escaped
//! (`\\`, `\n`) so each report stays one line on the pipe.

/// One line on the agent's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A step, or a line of provisioning output.
    Progress(String),
    Ready,
    /// Booting failed; `berth start` adds the tails of the logs.
    Error(String),
    /// A provisioning script or probe failed after a good boot; the text
    /// carries the script's own output, so `berth start` shows only it.
    ScriptFailed(String),
}

impl Report {
    pub fn to_line(&self) -> String {
        match self {
            Self::Progress(text) => format!("progress {}\n", escape(text)),
            Self::Ready => "ready\n".to_owned(),
            Self::Error(text) => format!("error {}\n", escape(text)),
            Self::ScriptFailed(text) => format!("failed {}\n", escape(text)),
        }
    }

    /// Parses a line (without its newline); unknown lines are progress.
    pub fn parse(line: &str) -> Self {
        if line == "ready" {
            Self::Ready
        } else if let Some(text) = line.strip_prefix("error ") {
            Self::Error(unescape(text))
        } else if let Some(text) = line.strip_prefix("failed ") {
            Self::ScriptFailed(unescape(text))
        } else if let Some(text) = line.strip_prefix("progress ") {
            Self::Progress(unescape(text))
        } else {
            Self::Progress(line.to_owned())
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_through_lines() {
        for report in [
            Report::Progress("booting".into()),
            Report::Ready,
            Report::Error("boom".into()),
            Report::ScriptFailed("script 1 failed:\nno \\n here\n".into()),
        ] {
            let line = report.to_line();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert_eq!(Report::parse(line.trim_end_matches('\n')), report);
        }
    }

    #[test]
    fn multi_line_error_is_escaped_onto_one_line() {
        assert_eq!(
            Report::Error("a\nb\\".into()).to_line(),
            "error a\\nb\\\\\n"
        );
    }

    #[test]
    fn unknown_lines_are_progress_verbatim() {
        assert_eq!(
            Report::parse("something \\n else"),
            Report::Progress("something \\n else".into())
        );
    }
}
