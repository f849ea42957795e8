//! Which processes a profile polices: a cgroup v2 path pattern, optionally narrowed by
//! container metadata.
//!
//! A [`CgroupPattern`] is written relative to the cgroup v2 mount and is either a literal
//! path (`/system.slice/nginx.service`) or a glob in which `*` matches within one path
//! component and `**` (a whole component) matches any number of components, none
//! included: `/kubepods/**/cri-containerd-*.scope`. Processes in a matching cgroup and
//! in every cgroup below it are policed (the kernel binds the nearest policed ancestor).
//!
//! A [`ContainerSelector`] narrows a pattern to containers with a given id, name or
//! image — narrowing, when the node knows it: the container runtime is asked on the
//! node, not here, and a node that cannot tell says so when it loads the policy.
use std::fmt;

use super::FieldError;

/// Longest cgroup pattern accepted (PATH_MAX less the mount point, roughly).
const MAX_PATTERN_LEN: usize = 4000;

/// Who a profile applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    pub cgroup: CgroupPattern,
    /// Narrows `cgroup` to some containers; `None`: every process the pattern selects.
    pub container: Option<ContainerSelector>,
}

/// A validated cgroup v2 path or glob, starting with `/`, without a trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupPattern(String);

impl CgroupPattern {
    /// Validates `s`: absolute, no empty, `.` or `..` components, `**` only as a whole
    /// component, not `/` itself. One trailing `/` is ignored.
    pub fn new(s: &str) -> Result<Self, FieldError> {
        let trimmed = s.strip_suffix('/').filter(|t| !t.is_empty()).unwrap_or(s);
        if !trimmed.starts_with('/') {
            return Err(FieldError::new("must be an absolute path (start with `/`)"));
        }
        if trimmed.len() > MAX_PATTERN_LEN {
            return Err(FieldError::new(format!(
                "is longer than {MAX_PATTERN_LEN} bytes"
            )));
        }
        if trimmed == "/" {
            return Err(FieldError::new(
                "`/` would police every process on the node, the agent included",
            ));
        }
        for part in trimmed[1..].split('/') {
            match part {
                "" => return Err(FieldError::new("must not contain empty components (`//`)")),
                "." | ".." => {
                    return Err(FieldError::new("must not contain `.` or `..` components"));
                }
                "**" => {}
                p if p.contains("**") => {
                    return Err(FieldError::new(format!(
                        "component `{p}`: `**` must be a whole component"
                    )));
                }
                p if p.chars().any(|c| c.is_control()) => {
                    return Err(FieldError::new("must not contain control characters"));
                }
                _ => {}
            }
        }
        Ok(CgroupPattern(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the pattern names exactly one cgroup (no `*`).
    pub fn is_literal(&self) -> bool {
        !self.0.contains('*')
    }

    /// Whether the pattern selects every cgroup (`/**`).
    pub fn is_everything(&self) -> bool {
        self.0 == "/**"
    }

    /// Whether the cgroup `path` (relative to the mount, starting with `/`) matches.
    /// Only the path itself: cgroups below a matching one are policed by inheritance.
    pub fn matches(&self, path: &str) -> bool {
        let path = path
            .strip_suffix('/')
            .filter(|t| !t.is_empty())
            .unwrap_or(path);
        let Some(path) = path.strip_prefix('/') else {
            return false;
        };
        let pattern: Vec<&str> = self.0[1..].split('/').collect();
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        // reach[j]: the pattern prefix read so far matches the first j path components.
        // Dynamic programming keeps this linear in the product of the two lengths, however
        // many `**` the pattern holds.
        let mut reach = vec![false; parts.len() + 1];
        reach[0] = true;
        for p in &pattern {
            let mut next = vec![false; parts.len() + 1];
            if *p == "**" {
                let mut any = false;
                for j in 0..=parts.len() {
                    any |= reach[j];
                    next[j] = any;
                }
            } else {
                for j in 0..parts.len() {
                    if reach[j] && component_matches(p, parts[j]) {
                        next[j + 1] = true;
                    }
                }
            }
            reach = next;
        }
        reach[parts.len()]
    }
}

impl fmt::Display for CgroupPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*` matches any run of characters within one component.
fn component_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Container metadata that narrows a cgroup pattern. At least one field is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerSelector {
    /// The container id, or a prefix of it of at least 12 hex digits (lowercase).
    pub id: Option<String>,
    /// The container name; `*` matches any run of characters.
    pub name: Option<String>,
    /// The image reference (`registry/repo:tag` or `…@sha256:…`); `*` matches any run
    /// of characters.
    pub image: Option<String>,
}

/// Validates a container id (prefix).
pub(crate) fn check_container_id(s: &str) -> Result<(), FieldError> {
    if !(12..=64).contains(&s.len()) || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(FieldError::new(
            "must be 12 to 64 lowercase hex digits (a container id or a prefix of one)",
        ));
    }
    Ok(())
}

/// Validates a container name pattern.
pub(crate) fn check_container_name(s: &str) -> Result<(), FieldError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*'));
    if !ok {
        return Err(FieldError::new(
            "must be 1-253 characters of A-Z, a-z, 0-9, `_`, `.`, `-` (and `*` as a wildcard)",
        ));
    }
    Ok(())
}

/// Validates an image reference pattern.
pub(crate) fn check_image(s: &str) -> Result<(), FieldError> {
    let ok = !s.is_empty()
        && s.len() <= 512
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/' | b':' | b'@' | b'*')
        });
    if !ok {
        return Err(FieldError::new(
            "must be an image reference of A-Z, a-z, 0-9, `_.-/:@` (and `*` as a wildcard), at most 512 characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> CgroupPattern {
        CgroupPattern::new(s).unwrap()
    }

    #[test]
    fn literal_patterns_match_only_themselves() {
        let p = pat("/system.slice/nginx.service/");
        assert_eq!(p.as_str(), "/system.slice/nginx.service");
        assert!(p.is_literal());
        assert!(p.matches("/system.slice/nginx.service"));
        assert!(p.matches("/system.slice/nginx.service/"));
        assert!(!p.matches("/system.slice/nginx.service/child"));
        assert!(!p.matches("/system.slice/nginx.servicex"));
        assert!(!p.matches("system.slice/nginx.service"));
    }

    #[test]
    fn a_star_stays_within_one_component() {
        let p = pat("/kubepods/*/cri-containerd-*.scope");
        assert!(!p.is_literal());
        assert!(p.matches("/kubepods/burstable/cri-containerd-ab12.scope"));
        assert!(!p.matches("/kubepods/burstable/pod1/cri-containerd-ab12.scope"));
        assert!(!p.matches("/kubepods/burstable/cri-containerd-ab12.scopex"));
    }

    #[test]
    fn a_double_star_spans_any_number_of_components_none_included() {
        let p = pat("/kubepods/**/cri-containerd-*.scope");
        assert!(p.matches("/kubepods/cri-containerd-1.scope"));
        assert!(p.matches("/kubepods/burstable/pod1/cri-containerd-1.scope"));
        assert!(!p.matches("/system.slice/cri-containerd-1.scope"));
        let all = pat("/**");
        assert!(all.is_everything());
        assert!(all.matches("/"));
        assert!(all.matches("/a/b/c"));
        // Many `**` stay cheap: the matcher is a table, not a backtracking search.
        let many = pat(&"/**".repeat(60));
        assert!(many.matches(&"/x".repeat(200)));
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_reason() {
        for (bad, why) in [
            ("relative/x", "absolute"),
            ("/", "every process"),
            ("/a//b", "empty components"),
            ("/a/../b", "`..`"),
            ("/a/x**/b", "whole component"),
            ("/a/***", "whole component"),
        ] {
            let err = CgroupPattern::new(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        /// A pattern made from a path by turning components into `*`, part of a
        /// component into `*`, or a run of components into `**` matches that path; the
        /// path itself, as a literal pattern, matches only itself.
        #[test]
        fn a_pattern_made_from_a_path_matches_it(
            parts in proptest::collection::vec("[a-c]{1,3}", 1..8),
            edits in proptest::collection::vec(0u8..4, 8),
            other in proptest::collection::vec("[a-c]{1,3}", 1..8),
        ) {
            let path = format!("/{}", parts.join("/"));
            let mut pattern = Vec::new();
            let mut i = 0;
            while i < parts.len() {
                match edits[i] {
                    1 => pattern.push("*".to_string()),
                    2 => pattern.push(format!("{}*", &parts[i][..1])),
                    3 => {
                        pattern.push("**".to_string());
                        i += 1; // `**` also swallows the next component, if any
                    }
                    _ => pattern.push(parts[i].clone()),
                }
                i += 1;
            }
            let p = CgroupPattern::new(&format!("/{}", pattern.join("/"))).unwrap();
            proptest::prop_assert!(p.matches(&path), "{p} vs {path}");
            let literal = CgroupPattern::new(&path).unwrap();
            let other = format!("/{}", other.join("/"));
            proptest::prop_assert_eq!(literal.matches(&other), other == path);
        }
    }

    #[test]
    fn container_fields_are_validated() {
        assert!(check_container_id("0123456789ab").is_ok());
        assert!(check_container_id("0123456789").is_err());
        assert!(check_container_id("0123456789AB").is_err());
        assert!(check_container_name("web-*").is_ok());
        assert!(check_container_name("web server").is_err());
        assert!(check_image("docker.io/library/nginx:1.27").is_ok());
        assert!(check_image("nginx latest").is_err());
    }
}
