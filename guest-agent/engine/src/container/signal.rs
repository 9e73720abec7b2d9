//! Signal names as Docker accepts them: `SIGTERM`, `TERM`, `term`, `15`.

use nix::sys::signal::Signal;

/// Parses a Docker signal argument.
pub fn parse(value: &str) -> Result<Signal, String> {
    let trimmed = value.trim();
    if let Ok(number) = trimmed.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| format!("invalid signal: {value}"));
    }
    let upper = trimmed.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("invalid signal: {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_docker_forms() {
        assert_eq!(parse("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse("usr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse("9").unwrap(), Signal::SIGKILL);
    }

    #[test]
    fn parse_rejects_unknown() {
        assert!(parse("SIGNOPE").unwrap_err().contains("invalid signal"));
        assert!(parse("99").is_err());
    }
}
