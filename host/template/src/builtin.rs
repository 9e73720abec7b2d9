//! Shipped templates, embedded from `templates/` at the repository root.

/// (name, YAML text). Names starting with `_` are partials: usable as a
/// `base` but not listed.
const BUILTINS: &[(&str, &str)] = &[
    ("default", include_str!("../../../templates/default.yaml")),
    ("minimal", include_str!("../../../templates/minimal.yaml")),
    ("k3s", include_str!("../../../templates/k3s.yaml")),
    (
        "_default/docker",
        include_str!("../../../templates/_default/docker.yaml"),
    ),
];

/// Names of the shipped templates, for `berth template list`.
pub fn list_builtin() -> Vec<&'static str> {
    BUILTINS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !name.starts_with('_'))
        .collect()
}

/// Other names of shipped templates (Lima's `template:docker` is our
/// `default`). Not listed; they resolve to the same text.
const ALIASES: &[(&str, &str)] = &[("docker", "default")];

/// The YAML of a shipped template (partials and aliases included), for
/// `berth template show`.
pub fn builtin(name: &str) -> Option<&'static str> {
    let name = name.strip_suffix(".yaml").unwrap_or(name);
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, target)| *target);
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// A shipped template's one-line description: the first sentence of the
/// first comment paragraph after its `# berth template: NAME` header.
pub fn description(name: &str) -> Option<String> {
    let text = builtin(name)?;
    let mut lines = text
        .lines()
        .map_while(|l| l.strip_prefix('#'))
        .map(str::trim);
    lines.find(|l| l.starts_with("berth template:"))?;
    let paragraph: Vec<&str> = lines
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let paragraph = paragraph.join(" ");
    let sentence = match paragraph.find(". ") {
        Some(end) => &paragraph[..=end],
        None => &paragraph,
    };
    (!sentence.is_empty()).then(|| sentence.to_owned())
}

pub(crate) fn known() -> String {
    list_builtin().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_template_has_a_description() {
        assert_eq!(
            description("default").as_deref(),
            Some("The Docker engine in a small Linux VM.")
        );
        assert_eq!(
            description("minimal").as_deref(),
            Some("A bare Linux VM: no Docker engine, no socket forwarding, no mounts.")
        );
        assert_eq!(
            description("k3s").as_deref(),
            Some("Single-node Kubernetes (https://k3s.io) next to the Docker engine.")
        );
        assert_eq!(description("nope"), None);
    }

    #[test]
    fn docker_is_an_unlisted_alias_of_default() {
        assert_eq!(builtin("docker"), builtin("default"));
        assert!(!list_builtin().contains(&"docker"));
    }
}
