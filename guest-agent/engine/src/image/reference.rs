//! Image references (`busybox`, `localhost:5000/a/b:v1`, `name@sha256:...`),
//! parsed and normalized the way Docker does.
//!
//! A reference has a registry domain, a repository path, and a tag and/or a
//! digest. `busybox` normalizes to `docker.io/library/busybox:latest`; the
//! *familiar* form (what `docker images` shows and what the tag index keys
//! on) drops `docker.io/` and `library/` again: `busybox:latest`.

use std::fmt;

/// The registry Docker assumes when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The tag Docker assumes when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (and port): `docker.io`, `localhost:5000`.
    pub domain: String,
    /// Repository path inside the registry: `library/busybox`.
    pub path: String,
    /// The tag, if one was given (see [`Reference::tag_or_latest`]).
    pub tag: Option<String>,
    /// `sha256:<hex>`, if one was given.
    pub digest: Option<String>,
}

/// Why a string is not a valid reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty reference")]
    Empty,
    #[error("repository name must be lowercase")]
    Uppercase,
    #[error("invalid repository name component {0:?}")]
    Component(String),
    #[error("invalid tag {0:?}")]
    Tag(String),
    #[error("invalid digest {0:?}")]
    Digest(String),
    #[error("invalid registry domain {0:?}")]
    Domain(String),
    #[error("repository name is longer than 255 characters")]
    TooLong,
}

impl Reference {
    /// Parses and normalizes `input` (`busybox` -> `docker.io/library/busybox`).
    /// A missing tag stays `None`; use [`Reference::with_default_tag`] for
    /// Docker's `latest` default.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        if input.is_empty() {
            return Err(ParseError::Empty);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest)?;
                (rest, Some(digest.to_owned()))
            }
            None => (input, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(colon) => {
                let colon = last_slash + colon;
                (&rest[..colon], Some(rest[colon + 1..].to_owned()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            validate_tag(tag)?;
        }
        if name.is_empty() {
            return Err(ParseError::Empty);
        }
        let (domain, path) = split_domain(name);
        validate_domain(&domain)?;
        if path.len() > 255 {
            return Err(ParseError::TooLong);
        }
        for component in path.split('/') {
            validate_component(component)?;
        }
        Ok(Self {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// This reference with tag `latest` if it has neither tag nor digest.
    #[must_use]
    pub fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_owned());
        }
        self
    }

    /// The tag, or `latest`.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }

    /// The fully qualified repository: `docker.io/library/busybox`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository as Docker shows it: `busybox`, `localhost:5000/a/b`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_owned(),
                _ => self.path.clone(),
            }
        } else {
            self.full_name()
        }
    }

    /// `repo:tag` in familiar form (the tag defaults to `latest`).
    pub fn familiar_tagged(&self) -> String {
        format!("{}:{}", self.familiar_name(), self.tag_or_latest())
    }

    /// `repo@digest` in familiar form, if this reference has a digest.
    pub fn familiar_digested(&self) -> Option<String> {
        self.digest
            .as_ref()
            .map(|d| format!("{}@{d}", self.familiar_name()))
    }
}

impl fmt::Display for Reference {
    /// The familiar form with whatever tag and digest were given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar_name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits `name` into domain and path, adding Docker's defaults.
fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
    };
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN.to_owned()
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    (domain, path)
}

fn validate_domain(domain: &str) -> Result<(), ParseError> {
    let (host, port) = domain.rsplit_once(':').unwrap_or((domain, ""));
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok =
        (!domain.contains(':')) || (!port.is_empty() && port.chars().all(|c| c.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(ParseError::Domain(domain.to_owned()))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn validate_component(component: &str) -> Result<(), ParseError> {
    let bad = || ParseError::Component(component.to_owned());
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ParseError::Uppercase);
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let valid = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !valid {
            return Err(bad());
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), ParseError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let first_ok = chars.next().is_some_and(word);
    if first_ok && tag.len() <= 128 && chars.all(|c| word(c) || c == '.' || c == '-') {
        Ok(())
    } else {
        Err(ParseError::Tag(tag.to_owned()))
    }
}

/// `sha256:<64 lowercase hex>`
fn validate_digest(digest: &str) -> Result<(), ParseError> {
    if is_sha256_digest(digest) {
        Ok(())
    } else {
        Err(ParseError::Digest(digest.to_owned()))
    }
}

/// Whether `s` is `sha256:` followed by 64 lowercase hex digits.
pub fn is_sha256_digest(s: &str) -> bool {
    super::Digest::parse(s).is_ok()
}

/// Whether `s` is 64 lowercase hex digits (a full image ID without prefix).
pub fn is_full_hex_id(s: &str) -> bool {
    super::Digest::from_hex(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn bare_name_normalizes_to_docker_library() {
        let r = Reference::parse("busybox").unwrap().with_default_tag();
        assert_eq!(r.full_name(), "docker.io/library/busybox");
        assert_eq!(r.familiar_tagged(), "busybox:latest");
    }

    #[test]
    fn fully_qualified_name_has_the_same_familiar_form() {
        let r = Reference::parse("docker.io/library/busybox:latest").unwrap();
        assert_eq!(r.familiar_tagged(), "busybox:latest");
        let r = Reference::parse("index.docker.io/library/busybox").unwrap();
        assert_eq!(r.familiar_tagged(), "busybox:latest");
    }

    #[test]
    fn user_repository_on_docker_hub_keeps_its_namespace() {
        let r = Reference::parse("someone/tool:1.2").unwrap();
        assert_eq!(r.full_name(), "docker.io/someone/tool");
        assert_eq!(r.familiar_tagged(), "someone/tool:1.2");
    }

    #[test]
    fn registry_with_port_is_a_domain_not_a_tag() {
        let r = Reference::parse("localhost:5000/busybox").unwrap();
        assert_eq!(r.domain, "localhost:5000");
        assert_eq!(r.path, "busybox");
        assert_eq!(r.tag, None);
        assert_eq!(r.familiar_tagged(), "localhost:5000/busybox:latest");
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.path.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "a/b", Some("v1"))
        );
    }

    #[test]
    fn digest_reference_parses_without_tag() {
        let r = Reference::parse(&format!("busybox@sha256:{HEX}"))
            .unwrap()
            .with_default_tag();
        assert_eq!(r.tag, None);
        assert_eq!(
            r.familiar_digested().unwrap(),
            format!("busybox@sha256:{HEX}")
        );
    }

    #[test]
    fn invalid_references_are_rejected() {
        assert_eq!(Reference::parse("BusyBox"), Err(ParseError::Uppercase));
        assert!(matches!(
            Reference::parse("busy box"),
            Err(ParseError::Component(_))
        ));
        assert!(matches!(
            Reference::parse("busybox:-x"),
            Err(ParseError::Tag(_))
        ));
        assert!(matches!(
            Reference::parse("busybox@sha256:abc"),
            Err(ParseError::Digest(_))
        ));
        assert!(matches!(
            Reference::parse("a//b"),
            Err(ParseError::Component(_))
        ));
        assert_eq!(Reference::parse(""), Err(ParseError::Empty));
        assert!(matches!(
            Reference::parse("a..b"),
            Err(ParseError::Component(_))
        ));
    }

    #[test]
    fn separators_follow_docker_grammar() {
        assert!(Reference::parse("a__b-c.d---e_f").is_ok());
        assert!(matches!(
            Reference::parse("a___b"),
            Err(ParseError::Component(_))
        ));
    }

    #[test]
    fn hex_id_helpers_require_exact_form() {
        assert!(is_full_hex_id(HEX));
        assert!(is_sha256_digest(&format!("sha256:{HEX}")));
        assert!(!is_full_hex_id(&HEX[1..]));
        assert!(!is_sha256_digest(HEX));
    }
}
