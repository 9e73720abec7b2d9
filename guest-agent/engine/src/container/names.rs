//! Container names: validation and Docker-style random names.

use rand::seq::IndexedRandom;

const ADJECTIVES: &[&str] = &[
    "admiring", "brave", "busy", "calm", "clever", "cool", "dazzling", "eager", "elegant",
    "festive", "focused", "gallant", "happy", "hopeful", "jolly", "keen", "kind", "loving",
    "modest", "nifty", "peaceful", "quirky", "relaxed", "serene", "sharp", "stoic", "sweet",
    "tender", "upbeat", "vigilant", "wizardly", "youthful", "zealous",
];

const NOUNS: &[&str] = &[
    "albattani",
    "archimedes",
    "babbage",
    "bohr",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euler",
    "feynman",
    "galileo",
    "gauss",
    "hopper",
    "hypatia",
    "kepler",
    "knuth",
    "lamport",
    "lovelace",
    "meitner",
    "newton",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "wozniak",
    "yalow",
];

/// A random `adjective_noun` name.
pub fn random() -> String {
    let mut rng = rand::rng();
    format!(
        "{}_{}",
        ADJECTIVES.choose(&mut rng).unwrap_or(&"brave"),
        NOUNS.choose(&mut rng).unwrap_or(&"turing")
    )
}

/// Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (a leading `/` is allowed).
pub fn validate(name: &str) -> Result<(), String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let mut chars = bare.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && bare.len() >= 2 {
        Ok(())
    } else {
        Err(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_accepts_docker_names() {
        assert!(validate("web-1").is_ok());
        assert!(validate("/db.primary_2").is_ok());
    }

    #[test]
    fn validate_rejects_bad_names() {
        assert!(validate("-x").is_err());
        assert!(validate("a b").is_err());
        assert!(validate("x").is_err());
    }

    #[test]
    fn random_names_are_valid() {
        assert!(validate(&random()).is_ok());
    }
}
