//! A position-annotated view of a YAML document, parsed with serde-saphyr's
//! `Spanned`, so that validation (which runs on typed data) can point back
//! at the line and column of any key or value by its path.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One step of a path into the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

impl LineCol {
    fn of(loc: &serde_saphyr::Location) -> Self {
        Self {
            line: usize::try_from(loc.line()).unwrap_or(1).max(1),
            column: usize::try_from(loc.column()).unwrap_or(1).max(1),
        }
    }
}

#[derive(Debug, Default)]
pub enum Node {
    Map(Vec<Entry>),
    Seq(Vec<(LineCol, Node)>),
    #[default]
    Scalar,
}

#[derive(Debug)]
pub struct Entry {
    pub key: String,
    pub key_at: LineCol,
    pub value_at: LineCol,
    pub value: Node,
}

/// The root of a document and where it starts.
#[derive(Debug, Default)]
pub struct Tree {
    pub root: Node,
}

impl Tree {
    pub fn parse(text: &str) -> Self {
        // The typed parse already succeeded, so this cannot fail on syntax;
        // an empty document has no positions to offer.
        let root = serde_saphyr::from_str::<Option<Node>>(text)
            .ok()
            .flatten()
            .unwrap_or_default();
        Tree { root }
    }

    /// Position of the value at `path`, or of the deepest ancestor found.
    pub fn value_at(&self, path: &[Seg<'_>]) -> LineCol {
        self.find(path, false)
    }

    /// Position of the key that ends `path` (for an index: the item).
    pub fn key_at(&self, path: &[Seg<'_>]) -> LineCol {
        self.find(path, true)
    }

    /// The dotted path (`portForwards[1].guestPort`) of the value that
    /// starts at `at`, if a value (not a key) starts there.
    pub fn path_of_value(&self, at: LineCol) -> Option<String> {
        fn walk(node: &Node, at: LineCol, prefix: &str) -> Option<String> {
            match node {
                Node::Map(entries) => entries.iter().find_map(|e| {
                    let path = if prefix.is_empty() {
                        e.key.clone()
                    } else {
                        format!("{prefix}.{}", e.key)
                    };
                    if e.value_at == at && !matches!(e.value, Node::Map(_) | Node::Seq(_)) {
                        Some(path)
                    } else {
                        walk(&e.value, at, &path)
                    }
                }),
                Node::Seq(items) => items.iter().enumerate().find_map(|(i, (item_at, item))| {
                    let path = format!("{prefix}[{i}]");
                    if *item_at == at && !matches!(item, Node::Map(_) | Node::Seq(_)) {
                        Some(path)
                    } else {
                        walk(item, at, &path)
                    }
                }),
                Node::Scalar => None,
            }
        }
        walk(&self.root, at, "")
    }

    fn find(&self, path: &[Seg<'_>], want_key: bool) -> LineCol {
        let mut node = &self.root;
        let mut at = LineCol { line: 1, column: 1 };
        for (i, seg) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            match (seg, node) {
                (Seg::Key(k), Node::Map(entries)) => match entries.iter().find(|e| e.key == *k) {
                    Some(e) => {
                        at = if last && want_key {
                            e.key_at
                        } else {
                            e.value_at
                        };
                        node = &e.value;
                    }
                    None => return at,
                },
                (Seg::Index(idx), Node::Seq(items)) => match items.get(*idx) {
                    Some((item_at, item)) => {
                        at = *item_at;
                        node = item;
                    }
                    None => return at,
                },
                _ => return at,
            }
        }
        at
    }
}

struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<Key>>()? {
                    let value: Spanned<Node> = map.next_value()?;
                    entries.push(Entry {
                        key: key.value.0,
                        key_at: LineCol::of(&key.referenced),
                        value_at: LineCol::of(&value.referenced),
                        value: value.value,
                    });
                }
                Ok(Node::Map(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push((LineCol::of(&item.referenced), item.value));
                }
                Ok(Node::Seq(items))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                Node::deserialize(d)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "cpus: 2\nmounts:\n  - location: /tmp\n    writable: true\n  - location: ~/src\n";

    #[test]
    fn value_at_finds_nested_values() {
        let tree = Tree::parse(DOC);
        assert_eq!(
            tree.value_at(&[Seg::Key("mounts"), Seg::Index(1), Seg::Key("location")]),
            LineCol {
                line: 5,
                column: 15
            }
        );
    }

    #[test]
    fn path_of_value_names_scalars_only() {
        let tree = Tree::parse(DOC);
        assert_eq!(
            tree.path_of_value(LineCol {
                line: 5,
                column: 15
            })
            .as_deref(),
            Some("mounts[1].location")
        );
        assert_eq!(tree.path_of_value(LineCol { line: 2, column: 1 }), None);
    }

    #[test]
    fn key_at_finds_keys() {
        let tree = Tree::parse(DOC);
        assert_eq!(
            tree.key_at(&[Seg::Key("mounts"), Seg::Index(0), Seg::Key("writable")]),
            LineCol { line: 4, column: 5 }
        );
    }
}
