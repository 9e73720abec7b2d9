//! Content digests: `sha256:<64 lowercase hex>`, parsed once at every boundary.
//!
//! A [`Digest`] is the only thing the image store builds blob and layer
//! paths from, so a digest that came from an archive, a registry or the API
//! can never name anything but a file directly inside the store's
//! directories: the parser accepts exactly `sha256:` followed by 64
//! lowercase hex characters and nothing else. Deserialising goes through the
//! same parser, so a manifest, index or config naming a bad digest fails to
//! parse rather than carrying the string inward.

use std::borrow::Borrow;
use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// The one supported algorithm's prefix.
const PREFIX: &str = "sha256:";
/// Length of a sha256 digest in hex.
const HEX_LEN: usize = 64;
/// How much of a rejected input an error quotes.
const QUOTED_MAX: usize = 100;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

/// Why a string is not a [`Digest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {input:?}: {reason}")]
pub struct ParseError {
    /// The rejected input (its first 100 characters).
    pub input: String,
    pub reason: &'static str,
}

impl ParseError {
    fn new(input: &str, reason: &'static str) -> Self {
        let input = match input.char_indices().nth(QUOTED_MAX) {
            Some((end, _)) => format!("{}...", &input[..end]),
            None => input.to_owned(),
        };
        Self { input, reason }
    }
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let Some(hex) = s.strip_prefix(PREFIX) else {
            return Err(ParseError::new(
                s,
                "expected sha256:<64 lowercase hex characters>",
            ));
        };
        check_hex(hex).map_err(|reason| ParseError::new(s, reason))?;
        Ok(Self(s.to_owned()))
    }

    /// Parses a bare 64-character lowercase hex sha256 (a Docker image ID
    /// without its prefix, a `blobs/sha256/<hex>` file name).
    pub fn from_hex(hex: &str) -> Result<Self, ParseError> {
        check_hex(hex).map_err(|reason| ParseError::new(hex, reason))?;
        Ok(Self(format!("{PREFIX}{hex}")))
    }

    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Self {
        Self(format!("{PREFIX}{}", hex::encode(hasher.finalize())))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex characters: the only part used in store paths.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// The 12-hex short form Docker prints.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

fn check_hex(hex: &str) -> Result<(), &'static str> {
    if hex.len() != HEX_LEN {
        return Err("expected exactly 64 hex characters after sha256:");
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("expected only lowercase hex characters (0-9, a-f)");
    }
    Ok(())
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for Digest {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by digest can be searched with a `&str`: equality, order and
/// hash are those of the one string field.
impl Borrow<str> for Digest {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> Self {
        digest.0
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest string sha256:<64 lowercase hex characters>")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Digest, E> {
                Digest::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A reader that hashes (sha256) and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The digest of everything read, and its length.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "b3a1e0d8c2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b6";

    #[test]
    fn parses_only_sha256_and_64_lowercase_hex() {
        let digest = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(digest.hex(), HEX);
        assert_eq!(digest.short(), &HEX[..12]);
        assert_eq!(digest.to_string(), format!("sha256:{HEX}"));
        assert_eq!(Digest::from_hex(HEX).unwrap(), digest);
        for bad in [
            String::new(),
            HEX.to_owned(),
            format!("sha256:{}", &HEX[..63]),
            format!("sha256:{HEX}0"),
            format!("sha256:{}", HEX.to_uppercase()),
            format!("sha512:{HEX}"),
            format!("SHA256:{HEX}"),
            "sha256:/etc/passwd".to_owned(),
            format!("sha256:../../{}", &HEX[..58]),
            format!("sha256:{}/x", &HEX[..62]),
            format!(" sha256:{HEX}"),
            format!("sha256:{}\u{e9}", &HEX[..62]),
        ] {
            let err = Digest::parse(&bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(Digest::from_hex("../etc/passwd").is_err());
    }

    #[test]
    fn error_quotes_long_input_truncated() {
        let long = format!("sha256:{}", "a".repeat(10_000));
        let err = Digest::parse(&long).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
    }

    #[test]
    fn serde_goes_through_the_parser() {
        let ok: Digest = serde_json::from_str(&format!("\"sha256:{HEX}\"")).unwrap();
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            format!("\"sha256:{HEX}\"")
        );
        let err = serde_json::from_str::<Digest>("\"sha256:/etc/shadow\"").unwrap_err();
        assert!(err.to_string().contains("/etc/shadow"), "{err}");
        assert!(serde_json::from_str::<Digest>("42").is_err());
    }

    #[test]
    fn of_and_hashing_reader_agree() {
        let bytes = b"hello world";
        let mut reader = HashingReader::new(&bytes[..]);
        io::copy(&mut reader, &mut io::sink()).unwrap();
        let (digest, size) = reader.finish();
        assert_eq!(digest, Digest::of(bytes));
        assert_eq!(size, 11);
        assert_eq!(
            digest.hex(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[test]
    fn maps_keyed_by_digest_find_str() {
        let digest = Digest::from_hex(HEX).unwrap();
        let map = std::collections::BTreeMap::from([(digest.clone(), 1)]);
        assert_eq!(map.get(digest.as_str()), Some(&1));
    }
}
