//! How the host agent tells `berth start` how booting goes.
//!
//! `berth start` spawns the agent with a pipe as its stdout and reads one
//! line per event until `ready`, `error ...` or EOF (the agent died). After
//! `ready` the agent writes nothing more there and `berth start` exits.

/// One line on the agent's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Progress(String),
    Ready,
    Error(String),
}

impl Report {
    pub fn to_line(&self) -> String {
        match self {
            Self::Progress(text) => format!("progress {}\n", one_line(text)),
            Self::Ready => "ready\n".to_owned(),
            Self::Error(text) => format!("error {}\n", one_line(text)),
        }
    }

    /// Parses a line (without its newline); unknown lines are progress.
    pub fn parse(line: &str) -> Self {
        if line == "ready" {
            Self::Ready
        } else if let Some(text) = line.strip_prefix("error ") {
            Self::Error(text.to_owned())
        } else {
            Self::Progress(line.strip_prefix("progress ").unwrap_or(line).to_owned())
        }
    }
}

fn one_line(text: &str) -> String {
    text.replace('\n', " | ")
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
        ] {
            let line = report.to_line();
            assert_eq!(Report::parse(line.trim_end_matches('\n')), report);
        }
    }

    #[test]
    fn multi_line_error_stays_on_one_line() {
        assert_eq!(Report::Error("a\nb".into()).to_line(), "error a | b\n");
    }
}
