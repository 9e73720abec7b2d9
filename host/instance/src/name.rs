//! Instance names.
//!
//! A name becomes a directory under `BERTH_HOME`, part of socket paths
//! (bounded at 104 bytes on macOS) and a docker context name, so it is kept
//! short and boring: 1-32 characters of `[a-z0-9-]`, starting with a letter
//! or digit and not ending with `-`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Longest instance name accepted.
pub const MAX_LEN: usize = 32;

/// A validated instance name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceName(String);

impl InstanceName {
    /// The instance `berth` uses when none is named.
    pub fn default_instance() -> Self {
        Self("default".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The docker context that points at this instance.
    pub fn docker_context(&self) -> String {
        format!("berth-{}", self.0)
    }
}

impl FromStr for InstanceName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        let reason = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > MAX_LEN {
            Some("must be at most 32 characters")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            Some("only lowercase letters, digits and '-' are allowed")
        } else if name.starts_with('-') || name.ends_with('-') {
            Some("must not start or end with '-'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidName {
                name: name.to_owned(),
                reason,
            }),
            None => Ok(Self(name.to_owned())),
        }
    }
}

impl TryFrom<String> for InstanceName {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        value.parse()
    }
}

impl From<InstanceName> for String {
    fn from(name: InstanceName) -> Self {
        name.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_accepts_lowercase_digits_and_dash() {
        assert_eq!("dev-2".parse::<InstanceName>().unwrap().as_str(), "dev-2");
    }

    #[test]
    fn name_rejects_uppercase_and_names_it() {
        let err = "Bad_Name".parse::<InstanceName>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid instance name \"Bad_Name\": only lowercase letters, digits and '-' are allowed"
        );
    }

    #[test]
    fn name_rejects_path_separators() {
        assert!("../etc".parse::<InstanceName>().is_err());
    }

    #[test]
    fn name_rejects_empty_long_and_dash_edges() {
        assert!("".parse::<InstanceName>().is_err());
        assert!("a".repeat(33).parse::<InstanceName>().is_err());
        assert!("-a".parse::<InstanceName>().is_err());
        assert!("a-".parse::<InstanceName>().is_err());
    }

    #[test]
    fn docker_context_is_prefixed() {
        assert_eq!(
            InstanceName::default_instance().docker_context(),
            "berth-default"
        );
    }
}
