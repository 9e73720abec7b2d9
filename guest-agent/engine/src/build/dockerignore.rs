//! `.dockerignore`: which build-context paths a build may not see.
//!
//! Semantics follow Docker's `patternmatcher`: one pattern per line, `#`
//! comments, paths cleaned and relative to the context root, `*` and `?`
//! within one path component, `**` across any number of components, `!`
//! re-includes. The last matching pattern wins. A pattern that matches a
//! directory also excludes everything below it.

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    components: Vec<String>,
    exclusion: bool,
}

impl Matcher {
    /// Compiles the content of a `.dockerignore` file.
    pub fn new(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|line| {
                let (exclusion, body) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let components: Vec<String> = body
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_owned)
                    .collect();
                (!components.is_empty()).then_some(Pattern {
                    components,
                    exclusion,
                })
            })
            .collect();
        Self { patterns }
    }

    /// Whether `path` (relative, `/`-separated) is excluded.
    pub fn excluded(&self, path: &str) -> bool {
        let components: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let mut excluded = false;
        for pattern in &self.patterns {
            // A match of the path or of any of its parent directories.
            let hit = (1..=components.len())
                .any(|n| match_components(&pattern.components, &components[..n]));
            if hit {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// Whether any `!` pattern could re-include something below `dir`
    /// (then an excluded directory must still be walked).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }
}

fn match_components(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_components(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, tail)) => {
                glob(first.as_bytes(), name.as_bytes()) && match_components(rest, tail)
            }
            None => false,
        },
    }
}

/// `*`, `?`, `[...]` and `\` escapes within one component.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(b'['), Some(&c)) => match pattern.iter().position(|&b| b == b']') {
            Some(end) if end > 1 => {
                let class = &pattern[1..end];
                let (negate, class) = match class.first() {
                    Some(b'^' | b'!') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut found = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        found |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        found |= class[i] == c;
                        i += 1;
                    }
                }
                found != negate && glob(&pattern[end + 1..], &text[1..])
            }
            _ => c == b'[' && glob(&pattern[1..], &text[1..]),
        },
        (Some(b'\\'), Some(&c)) if pattern.len() > 1 => {
            pattern[1] == c && glob(&pattern[2..], &text[1..])
        }
        (Some(a), Some(b)) if a == b => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_pattern_excludes_file_and_directory_contents() {
        let matcher = Matcher::new("# comment\nsecret.txt\nbuild/\n");
        assert!(matcher.excluded("secret.txt"));
        assert!(matcher.excluded("build/out/a.o"));
        assert!(!matcher.excluded("src/secret.txt"));
        assert!(!matcher.excluded("main.c"));
    }

    #[test]
    fn double_star_matches_any_depth() {
        let matcher = Matcher::new("**/*.log\n");
        assert!(matcher.excluded("a.log"));
        assert!(matcher.excluded("x/y/z.log"));
        assert!(!matcher.excluded("x/y/z.txt"));
    }

    #[test]
    fn exception_reincludes_and_last_match_wins() {
        let matcher = Matcher::new("*.md\n!README.md\n");
        assert!(matcher.excluded("CHANGES.md"));
        assert!(!matcher.excluded("README.md"));
        assert!(matcher.has_exceptions());
    }

    #[test]
    fn glob_handles_classes_and_question_marks() {
        assert!(glob(b"file[0-9].?", b"file7.c"));
        assert!(!glob(b"file[!0-9]", b"file7"));
    }
}
