//! Dockerfile parsing and Docker's word/variable processing.
//!
//! [`parse`] turns the file into [`Instruction`]s: comments and blank lines
//! dropped, `\` continuations joined (comment lines inside a continuation
//! are skipped, as Docker does), the keyword upper-cased and checked,
//! leading `--flag=value` options split off, and an exec-form JSON array
//! recognised. Arguments stay raw: variables are expanded when the step
//! runs, against the environment at that point ([`process_words`]).

use std::collections::HashMap;

/// Instructions the legacy builder executes.
const KNOWN: &[&str] = &[
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "WORKDIR",
    "CMD",
    "ENTRYPOINT",
    "EXPOSE",
    "VOLUME",
    "USER",
    "LABEL",
    "ARG",
    "STOPSIGNAL",
    "MAINTAINER",
    "SHELL",
    "HEALTHCHECK",
    "ONBUILD",
];

/// A Dockerfile error, with Docker's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("dockerfile parse error on line {line}: unknown instruction: {keyword}")]
    UnknownInstruction { line: usize, keyword: String },
    #[error("dockerfile parse error on line {line}: {message}")]
    Invalid { line: usize, message: String },
    #[error("the Dockerfile cannot be empty")]
    Empty,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line of the keyword.
    pub line: usize,
    /// Upper-case keyword (`RUN`).
    pub keyword: String,
    /// `--name=value` options before the arguments.
    pub flags: Vec<(String, String)>,
    /// The arguments as written (continuations joined), flags removed.
    pub args: String,
    /// The exec-form array, when the arguments are one.
    pub json: Option<Vec<String>>,
    /// The instruction as Docker echoes it in `Step n/m : ...`.
    pub original: String,
}

impl Instruction {
    /// The value of flag `name`, if given.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a whole Dockerfile.
pub fn parse(text: &str) -> Result<Vec<Instruction>, ParseError> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, raw)) = lines.next() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let line = index + 1;
        let mut joined = String::new();
        let mut current = trimmed.to_owned();
        loop {
            let end = current.trim_end();
            if let Some(head) = end.strip_suffix('\\') {
                joined.push_str(head);
                // Continue with the next non-comment, non-blank line.
                let mut next = None;
                for (_, raw) in lines.by_ref() {
                    let t = raw.trim();
                    if t.is_empty() || t.starts_with('#') {
                        continue;
                    }
                    next = Some(raw.to_owned());
                    break;
                }
                match next {
                    Some(n) => current = n,
                    None => break,
                }
            } else {
                joined.push_str(end);
                break;
            }
        }
        out.push(instruction(line, joined.trim())?);
    }
    if out.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(out)
}

fn instruction(line: usize, text: &str) -> Result<Instruction, ParseError> {
    let (keyword, rest) = text
        .split_once(char::is_whitespace)
        .map_or((text, ""), |(k, r)| (k, r.trim_start()));
    let keyword = keyword.to_ascii_uppercase();
    if !KNOWN.contains(&keyword.as_str()) {
        return Err(ParseError::UnknownInstruction {
            line,
            keyword: text
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
        });
    }
    let mut flags = Vec::new();
    let mut args = rest;
    if matches!(
        keyword.as_str(),
        "FROM" | "COPY" | "ADD" | "RUN" | "HEALTHCHECK"
    ) {
        while let Some(flag) = args.strip_prefix("--") {
            let (word, tail) = flag
                .split_once(char::is_whitespace)
                .map_or((flag, ""), |(w, t)| (w, t.trim_start()));
            let (name, value) = word.split_once('=').unwrap_or((word, "true"));
            flags.push((name.to_owned(), value.to_owned()));
            args = tail;
        }
    }
    let json = if args.starts_with('[') {
        serde_json::from_str::<Vec<String>>(args).ok()
    } else {
        None
    };
    let needs_args = !matches!(keyword.as_str(), "CMD" | "ENTRYPOINT" | "ONBUILD");
    if needs_args && args.is_empty() {
        return Err(ParseError::Invalid {
            line,
            message: format!("{keyword} requires at least one argument"),
        });
    }
    Ok(Instruction {
        line,
        original: format!("{keyword} {}", rest).trim_end().to_owned(),
        keyword,
        flags,
        args: args.to_owned(),
        json,
    })
}

/// Looks variables up while processing words.
pub type Vars = HashMap<String, String>;

/// Expands `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}` and splits
/// on unquoted whitespace, removing quotes, like Docker's shell lexer.
pub fn process_words(input: &str, vars: &Vars) -> Result<Vec<String>, String> {
    lex(input, vars, true)
}

/// Like [`process_words`], but the result is one word (no splitting).
pub fn process_word(input: &str, vars: &Vars) -> Result<String, String> {
    Ok(lex(input, vars, false)?.concat())
}

fn lex(input: &str, vars: &Vars, split: bool) -> Result<Vec<String>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() && split => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                i += 1;
            }
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                i += 1;
            }
            '"' => {
                in_word = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err("unexpected end of statement while looking for matching double-quote".into());
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\' | '$')) => {
                            word.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('$') => i = expand(&chars, i, vars, &mut word)?,
                        Some(&other) => {
                            word.push(other);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(&next) = chars.get(i + 1) {
                    word.push(next);
                    i += 2;
                } else {
                    word.push('\\');
                    i += 1;
                }
            }
            '$' => {
                in_word = true;
                i = expand(&chars, i, vars, &mut word)?;
            }
            other => {
                in_word = true;
                word.push(other);
                i += 1;
            }
        }
    }
    if in_word || !split {
        words.push(word);
    }
    Ok(words)
}

/// Expands the variable reference starting at `chars[start] == '$'`;
/// returns the index after it.
fn expand(chars: &[char], start: usize, vars: &Vars, out: &mut String) -> Result<usize, String> {
    let mut i = start + 1;
    match chars.get(i) {
        Some('{') => {
            i += 1;
            let name_start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[name_start..i].iter().collect();
            let value = vars.get(&name).cloned().unwrap_or_default();
            match chars.get(i) {
                Some('}') => {
                    out.push_str(&value);
                    Ok(i + 1)
                }
                Some(':') => {
                    let modifier = chars.get(i + 1).copied();
                    let word_start = i + 2;
                    let mut depth = 0;
                    let mut j = word_start;
                    while j < chars.len() && !(chars[j] == '}' && depth == 0) {
                        if chars[j] == '{' {
                            depth += 1;
                        } else if chars[j] == '}' {
                            depth -= 1;
                        }
                        j += 1;
                    }
                    if j >= chars.len() {
                        return Err(format!("missing '}}' in substitution of ${{{name}"));
                    }
                    let word: String = chars[word_start..j].iter().collect();
                    let word = process_word(&word, vars)?;
                    match modifier {
                        Some('-') => out.push_str(if value.is_empty() { &word } else { &value }),
                        Some('+') => {
                            if !value.is_empty() {
                                out.push_str(&word);
                            }
                        }
                        _ => {
                            return Err(format!(
                                "unsupported modifier in substitution of ${{{name}}}"
                            ));
                        }
                    }
                    Ok(j + 1)
                }
                _ => Err(format!("missing '}}' in substitution of ${{{name}")),
            }
        }
        Some(c) if c.is_ascii_alphanumeric() || *c == '_' => {
            let name_start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[name_start..i].iter().collect();
            out.push_str(vars.get(&name).map_or("", String::as_str));
            Ok(i)
        }
        _ => {
            out.push('$');
            Ok(i)
        }
    }
}

/// Splits `ENV`/`LABEL`/`ARG`-style arguments into key/value pairs:
/// `k=v k2="v 2"`, or the legacy single `k value with spaces`.
pub fn key_values(
    keyword: &str,
    args: &str,
    vars: &Vars,
) -> Result<Vec<(String, Option<String>)>, String> {
    let words = process_words(args, vars)?;
    let first_raw = args.split_whitespace().next().unwrap_or_default();
    if !first_raw.contains('=') && keyword != "ARG" {
        let (key, value) = args
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{keyword} names must be followed by a value"))?;
        return Ok(vec![(
            key.to_owned(),
            Some(process_word(value.trim(), vars)?),
        )]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), Some(v.to_owned()))),
            None if keyword == "ARG" => Ok((w, None)),
            None => Err(format!("{keyword} {w}: missing '='")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# syntax comment\nFROM busybox AS base\n\nRUN echo a \\\n  # inner comment\n  && echo b\nCOPY --chown=1:2 a.txt /dst/\nCMD [\"sh\", \"-c\", \"echo hi\"]\nenv A=1\n";

    #[test]
    fn parse_joins_continuations_and_skips_comments() {
        let parsed = parse(SAMPLE).unwrap();
        let keywords: Vec<&str> = parsed.iter().map(|i| i.keyword.as_str()).collect();
        assert_eq!(keywords, vec!["FROM", "RUN", "COPY", "CMD", "ENV"]);
        assert_eq!(parsed[1].args, "echo a   && echo b");
        assert_eq!(parsed[1].line, 4);
    }

    #[test]
    fn parse_splits_flags_and_exec_form() {
        let parsed = parse(SAMPLE).unwrap();
        assert_eq!(parsed[2].flag("chown"), Some("1:2"));
        assert_eq!(parsed[2].args, "a.txt /dst/");
        assert_eq!(
            parsed[3].json,
            Some(vec!["sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(parsed[2].original, "COPY --chown=1:2 a.txt /dst/");
    }

    #[test]
    fn parse_rejects_unknown_instructions_with_the_line() {
        assert_eq!(
            parse("FROM busybox\nFROB x\n"),
            Err(ParseError::UnknownInstruction {
                line: 2,
                keyword: "FROB".into()
            })
        );
    }

    #[test]
    fn process_words_expands_and_unquotes() {
        let vars: Vars = [("NAME".to_owned(), "berth".to_owned())].into();
        assert_eq!(
            process_words(
                "a=$NAME \"b c\" '${NAME}' ${MISSING:-dflt} ${NAME:+set}",
                &vars
            )
            .unwrap(),
            vec!["a=berth", "b c", "${NAME}", "dflt", "set"]
        );
    }

    #[test]
    fn key_values_accepts_both_env_forms() {
        let vars = Vars::new();
        assert_eq!(
            key_values("ENV", "A=1 B=\"two words\"", &vars).unwrap(),
            vec![
                ("A".into(), Some("1".into())),
                ("B".into(), Some("two words".into()))
            ]
        );
        assert_eq!(
            key_values("ENV", "GREETING hello world", &vars).unwrap(),
            vec![("GREETING".into(), Some("hello world".into()))]
        );
        assert_eq!(
            key_values("ARG", "VERSION", &vars).unwrap(),
            vec![("VERSION".into(), None)]
        );
    }
}
