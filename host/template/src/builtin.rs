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

/// The YAML of a shipped template (partials included), for `berth template show`.
pub fn builtin(name: &str) -> Option<&'static str> {
    let name = name.strip_suffix(".yaml").unwrap_or(name);
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

pub(crate) fn known() -> String {
    list_builtin().join(", ")
}
