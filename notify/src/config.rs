//! `policies/notify.yaml`: the webhook targets, how each one is signed, rendered,
//! filtered, rate-limited and retried.
//!
//! ```yaml
//! apiVersion: driftwall.dev/v1alpha1
//! kind: NotifyConfig
//! targets:
//!   - name: soc-slack                       # [a-z0-9][a-z0-9._-]{0,62}, unique
//!     url_env: DRIFTWALL_SOC_URL            # or url: https://…, http or https
//!     secret_env: DRIFTWALL_SOC_SECRET      # or secret_file: /etc/driftwall/soc.secret
//!     template: slack                       # json | slack | cloudevents
//!     filter:                               # every list optional; absent = any
//!       workloads: [demo-web]
//!       hooks: [exec, connect]
//!       min_severity: medium                # info | low | medium | high | critical
//!     cooldown: 5m                          # per (workload, rule); 0s = off (default)
//!     timeout: 10s                          # per request (default 10s)
//!     max_attempts: 10                      # then dead letter (default 10)
//!     concurrency: 4                        # requests in flight (default 4)
//!     max_pending: 10000                    # waiting deliveries kept (default 10000)
//!     backoff: { initial: 1s, max: 5m }     # exponential, full jitter (defaults shown)
//!     ca_file: /etc/driftwall/internal-ca.pem  # https only: CAs trusted besides webpki's
//! ```
//!
//! Unknown fields are errors. Secrets never live in the file: `secret_env` names an
//! environment variable of the agent, `secret_file` a file readable by the agent only
//! (mode `0600` or stricter; a relative path is taken from the config file's folder).
//! A URL that is itself a credential (Slack's incoming-webhook URLs are) comes from
//! `url_env`; a URL with a user name or password in it is refused.
use std::{
    collections::BTreeSet,
    fmt, fs,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use serde_saphyr::Spanned;
use url::Url;

use crate::{payload::Severity, signing::SigningSecret};

/// The `apiVersion` this version of driftwall reads.
pub const API_VERSION: &str = "driftwall.dev/v1alpha1";
/// The `kind` of a notification config document.
pub const KIND: &str = "NotifyConfig";
/// Shortest signing secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Where in the config file something is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigLocation {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: u64,
    /// 1-based; 0 when unknown.
    pub column: u64,
}

impl fmt::Display for ConfigLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}", self.file.display()),
            (l, 0) => write!(f, "{}:{l}", self.file.display()),
            (l, c) => write!(f, "{}:{l}:{c}", self.file.display()),
        }
    }
}

/// Why a notification config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: {reason}")]
    Invalid { at: ConfigLocation, reason: String },
}

/// The body format a target receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    /// driftwall's own JSON envelope (`application/json`).
    Json,
    /// A Slack incoming-webhook message: `text` plus Block Kit `blocks`.
    Slack,
    /// A CloudEvents 1.0 structured-mode event (`application/cloudevents+json`).
    Cloudevents,
}

/// Which notices a target wants; an empty list matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub workloads: BTreeSet<String>,
    pub hooks: BTreeSet<String>,
    pub min_severity: Option<Severity>,
}

impl Filter {
    /// Whether a notice about `workload`, `hook` at `severity` goes to this target.
    pub fn admits(&self, workload: &str, hook: &str, severity: Severity) -> bool {
        (self.workloads.is_empty() || self.workloads.contains(workload))
            && (self.hooks.is_empty() || self.hooks.contains(hook))
            && self.min_severity.is_none_or(|m| severity >= m)
    }
}

/// Exponential back-off with full jitter: before retry `n` (1-based) the delay is
/// uniform in `[0, min(max, initial * 2^(n-1))]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The upper bound of the delay before retry number `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(32);
        self.initial
            .checked_mul(1u32 << shift.min(31))
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// One validated webhook target. Its `Debug` form shows the URL's scheme and host
/// only, since the rest may be a credential.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub url: Url,
    pub secret: SigningSecret,
    pub template: Template,
    pub filter: Filter,
    /// Zero: no cooldown.
    pub cooldown: Duration,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub concurrency: usize,
    /// Deliveries kept waiting for this target at most; further notices are counted
    /// and dropped, so a receiver that is down for days cannot fill the disk.
    pub max_pending: u64,
    pub backoff: Backoff,
    /// Certificate authorities trusted for this target besides the built-in webpki
    /// roots (an internal PKI's receiver).
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field(
                "url",
                &format_args!(
                    "{}://{}/…",
                    self.url.scheme(),
                    self.url.host_str().unwrap_or("")
                ),
            )
            .field("secret", &self.secret)
            .field("template", &self.template)
            .field("filter", &self.filter)
            .field("cooldown", &self.cooldown)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("concurrency", &self.concurrency)
            .field("max_pending", &self.max_pending)
            .field("backoff", &self.backoff)
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

/// The validated contents of `notify.yaml`.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    pub targets: Vec<Target>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigDoc {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    targets: Vec<TargetDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetDoc {
    name: Spanned<String>,
    url: Option<Spanned<String>>,
    url_env: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    template: Template,
    #[serde(default)]
    filter: FilterDoc,
    cooldown: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_attempts: Option<Spanned<u32>>,
    concurrency: Option<Spanned<u32>>,
    max_pending: Option<Spanned<u32>>,
    backoff: Option<BackoffDoc>,
    ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FilterDoc {
    #[serde(default)]
    workloads: Vec<String>,
    #[serde(default)]
    hooks: Vec<String>,
    min_severity: Option<Severity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffDoc {
    initial: Spanned<String>,
    max: Spanned<String>,
}

/// Defaults for what a target leaves out.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
pub const DEFAULT_CONCURRENCY: u32 = 4;
pub const DEFAULT_MAX_PENDING: u32 = 10_000;
pub const DEFAULT_BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(300),
};
/// Upper bounds that keep a typo from meaning "retry forever" or "a million sockets".
const MAX_ATTEMPTS_LIMIT: u32 = 1000;
const MAX_CONCURRENCY_LIMIT: u32 = 256;
const MAX_PENDING_LIMIT: u32 = 1_000_000;

impl NotifyConfig {
    /// Reads and validates a config file, resolving each target's secret.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(invalid(
                path,
                0,
                0,
                format!("larger than {MAX_CONFIG_BYTES} bytes"),
            ));
        }
        let text = fs::read_to_string(path).map_err(io)?;
        Self::parse(path, &text)
    }

    /// Validates the text of a config file named `file` (for error locations and for
    /// relative `secret_file` paths), reading `secret_env` from the process environment.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_with_env(file, text, |var| std::env::var(var).ok())
    }

    /// [`parse`](Self::parse) with `env` standing for the environment, for checking a
    /// config on a machine that does not hold the agent's secrets (CI, `driftwall check`).
    pub fn parse_with_env(
        file: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let doc: ConfigDoc = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let reason = e.to_string();
            let reason = reason.lines().next().unwrap_or("invalid YAML").to_string();
            invalid(file, line, column, reason)
        })?;
        let at = |l: &serde_saphyr::Location| (l.line(), l.column());
        let refuse = |loc: &serde_saphyr::Location, reason: String| {
            let (l, c) = at(loc);
            invalid(file, l, c, reason)
        };
        if doc.api_version.value != API_VERSION {
            return Err(refuse(
                &doc.api_version.referenced,
                format!(
                    "apiVersion `{}` is not supported; expected `{API_VERSION}`",
                    doc.api_version.value
                ),
            ));
        }
        if doc.kind.value != KIND {
            return Err(refuse(
                &doc.kind.referenced,
                format!("kind `{}`; expected `{KIND}`", doc.kind.value),
            ));
        }
        let base = file.parent().unwrap_or(Path::new("."));
        let mut names = BTreeSet::new();
        let mut targets = Vec::with_capacity(doc.targets.len());
        for t in doc.targets {
            let name = t.name.value.clone();
            if !is_valid_name(&name) {
                return Err(refuse(
                    &t.name.referenced,
                    format!("target name `{name}` must match [a-z0-9][a-z0-9._-]{{0,62}}"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(refuse(
                    &t.name.referenced,
                    format!("target `{name}` is defined twice"),
                ));
            }
            let (url, url_at) = match (&t.url, &t.url_env) {
                (Some(u), None) => (parse_url(&u.value, Some(&u.value)), u.referenced),
                (None, Some(var)) => match env(&var.value) {
                    // The value is a credential: never repeat it in an error.
                    Some(value) => (parse_url(&value, None), var.referenced),
                    None => {
                        return Err(refuse(
                            &var.referenced,
                            format!("environment variable `{}` is not set", var.value),
                        ));
                    }
                },
                _ => {
                    return Err(refuse(
                        &t.name.referenced,
                        format!("target `{name}` needs exactly one of `url` or `url_env`"),
                    ));
                }
            };
            let url = url.map_err(|r| refuse(&url_at, r))?;
            let secret = match (&t.secret_env, &t.secret_file) {
                (Some(var), None) => {
                    let value = env(&var.value).ok_or_else(|| {
                        refuse(
                            &var.referenced,
                            format!("environment variable `{}` is not set", var.value),
                        )
                    })?;
                    SigningSecret::new(value.into_bytes())
                        .map_err(|r| refuse(&var.referenced, r))?
                }
                (None, Some(p)) => {
                    let path = base.join(&p.value);
                    let bytes = read_secret_file(&path).map_err(|r| refuse(&p.referenced, r))?;
                    SigningSecret::new(bytes).map_err(|r| refuse(&p.referenced, r))?
                }
                _ => {
                    return Err(refuse(
                        &t.name.referenced,
                        format!(
                            "target `{name}` needs exactly one of `secret_env` or `secret_file`"
                        ),
                    ));
                }
            };
            let duration = |d: &Option<Spanned<String>>, default: Duration| match d {
                None => Ok(default),
                Some(s) => parse_duration(&s.value).map_err(|r| refuse(&s.referenced, r)),
            };
            let cooldown = duration(&t.cooldown, Duration::ZERO)?;
            let timeout = duration(&t.timeout, DEFAULT_TIMEOUT)?;
            if timeout.is_zero() {
                let loc = t.timeout.as_ref().map(|s| s.referenced);
                return Err(refuse(
                    &loc.unwrap_or(t.name.referenced),
                    "timeout must be more than 0s".into(),
                ));
            }
            let bounded = |v: &Option<Spanned<u32>>, default: u32, limit: u32, what: &str| match v {
                None => Ok(default),
                Some(s) if (1..=limit).contains(&s.value) => Ok(s.value),
                Some(s) => Err(refuse(
                    &s.referenced,
                    format!("{what} must be between 1 and {limit}"),
                )),
            };
            let max_attempts = bounded(
                &t.max_attempts,
                DEFAULT_MAX_ATTEMPTS,
                MAX_ATTEMPTS_LIMIT,
                "max_attempts",
            )?;
            let concurrency = bounded(
                &t.concurrency,
                DEFAULT_CONCURRENCY,
                MAX_CONCURRENCY_LIMIT,
                "concurrency",
            )?;
            let max_pending = bounded(
                &t.max_pending,
                DEFAULT_MAX_PENDING,
                MAX_PENDING_LIMIT,
                "max_pending",
            )?;
            let backoff = match &t.backoff {
                None => DEFAULT_BACKOFF,
                Some(b) => {
                    let initial = parse_duration(&b.initial.value)
                        .map_err(|r| refuse(&b.initial.referenced, r))?;
                    let max =
                        parse_duration(&b.max.value).map_err(|r| refuse(&b.max.referenced, r))?;
                    if initial.is_zero() || max < initial {
                        return Err(refuse(
                            &b.initial.referenced,
                            "backoff needs 0 < initial <= max".into(),
                        ));
                    }
                    Backoff { initial, max }
                }
            };
            let extra_roots = match &t.ca_file {
                None => Vec::new(),
                Some(p) if url.scheme() != "https" => {
                    return Err(refuse(
                        &p.referenced,
                        "ca_file needs an https:// url".into(),
                    ));
                }
                Some(p) => {
                    read_ca_file(&base.join(&p.value)).map_err(|r| refuse(&p.referenced, r))?
                }
            };
            targets.push(Target {
                name,
                url,
                secret,
                template: t.template,
                filter: Filter {
                    workloads: t.filter.workloads.into_iter().collect(),
                    hooks: t.filter.hooks.into_iter().collect(),
                    min_severity: t.filter.min_severity,
                },
                cooldown,
                timeout,
                max_attempts,
                concurrency: concurrency as usize,
                max_pending: u64::from(max_pending),
                backoff,
                extra_roots,
            });
        }
        Ok(NotifyConfig { targets })
    }

    /// The target called `name`.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }
}

/// An http(s) URL with a host and no inline credentials. `shown` is how an error may
/// name it (`None` when the URL itself is secret).
fn parse_url(text: &str, shown: Option<&str>) -> Result<Url, String> {
    let what = shown.map_or_else(|| "the URL".to_string(), |s| format!("url `{s}`"));
    let url = Url::parse(text).map_err(|e| format!("{what}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{what} must be http:// or https:// with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{} has credentials in it; give them through url_env instead",
            if shown.is_some() { "url" } else { "the URL" }
        ));
    }
    Ok(url)
}

fn invalid(file: &Path, line: u64, column: u64, reason: String) -> ConfigError {
    ConfigError::Invalid {
        at: ConfigLocation {
            file: file.to_path_buf(),
            line,
            column,
        },
        reason,
    }
}

fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c))
}

/// Reads a secret file that only its owner may read; one trailing newline is dropped.
fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|e| format!("secret_file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "secret_file {} has mode {:o}; group and others must have no access (chmod 600)",
            path.display(),
            mode & 0o777
        ));
    }
    if meta.len() > 4096 {
        return Err(format!(
            "secret_file {} is larger than 4096 bytes",
            path.display()
        ));
    }
    let mut bytes = fs::read(path).map_err(|e| format!("secret_file {}: {e}", path.display()))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    Ok(bytes)
}

/// Reads a PEM bundle of one or more CA certificates.
fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let meta = fs::metadata(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "ca_file {} is larger than {MAX_CONFIG_BYTES} bytes",
            path.display()
        ));
    }
    let pem = fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ca_file {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// Parses `250ms`, `10s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("duration `{s}`: expected a whole number and ms, s, m or h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("duration `{s}`: unit must be ms, s, m or h")),
    };
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err(format!("duration `{s}` is longer than a week"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn with_secret(yaml_targets: &str) -> (tempfile::TempDir, Result<NotifyConfig, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s.secret");
        fs::write(&secret, "0123456789abcdef0123\n").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let text =
            format!("apiVersion: {API_VERSION}\nkind: NotifyConfig\ntargets:\n{yaml_targets}");
        let file = dir.path().join("notify.yaml");
        let r = NotifyConfig::parse(&file, &text);
        (dir, r)
    }

    fn reason(r: Result<NotifyConfig, ConfigError>) -> (u64, u64, String) {
        match r {
            Err(ConfigError::Invalid { at, reason }) => (at.line, at.column, reason),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_full_target_is_read_with_its_values() {
        let (_d, r) = with_secret(
            "  - name: soc\n    url: https://hooks.example/x\n    secret_file: s.secret\n    template: slack\n    filter: { workloads: [web], hooks: [exec], min_severity: high }\n    cooldown: 5m\n    timeout: 250ms\n    max_attempts: 3\n    concurrency: 2\n    backoff: { initial: 100ms, max: 2s }\n",
        );
        let c = r.unwrap();
        let t = &c.targets[0];
        assert_eq!(t.name, "soc");
        assert_eq!(t.template, Template::Slack);
        assert_eq!(t.secret.expose(), b"0123456789abcdef0123");
        assert_eq!(t.cooldown, Duration::from_secs(300));
        assert_eq!(t.timeout, Duration::from_millis(250));
        assert_eq!((t.max_attempts, t.concurrency), (3, 2));
        assert_eq!(t.backoff.initial, Duration::from_millis(100));
        assert!(t.filter.admits("web", "exec", Severity::Critical));
        assert!(!t.filter.admits("web", "exec", Severity::Medium));
        assert!(!t.filter.admits("db", "exec", Severity::Critical));
        assert!(!t.filter.admits("web", "connect", Severity::Critical));
    }

    #[test]
    fn defaults_apply_to_what_a_target_leaves_out() {
        let (_d, r) = with_secret(
            "  - name: a\n    url: http://127.0.0.1:9/h\n    secret_file: s.secret\n    template: json\n",
        );
        let t = r.unwrap().targets.remove(0);
        assert_eq!(t.timeout, DEFAULT_TIMEOUT);
        assert_eq!(t.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(t.concurrency, DEFAULT_CONCURRENCY as usize);
        assert_eq!(t.cooldown, Duration::ZERO);
        assert!(t.filter.admits("any", "any", Severity::Info));
    }

    #[test]
    fn an_unknown_field_is_an_error_with_its_line() {
        let (_d, r) = with_secret(
            "  - name: a\n    url: http://127.0.0.1:9/h\n    secret_file: s.secret\n    template: json\n    retries: 3\n",
        );
        let (line, _c, why) = reason(r);
        assert_eq!(line, 8);
        assert!(why.contains("retries"), "{why}");
    }

    #[test]
    fn a_non_http_url_is_refused_at_its_position() {
        let (_d, r) = with_secret(
            "  - name: a\n    url: file:///etc/passwd\n    secret_file: s.secret\n    template: json\n",
        );
        let (line, col, why) = reason(r);
        assert_eq!((line, col), (5, 10));
        assert!(why.contains("http"), "{why}");
    }

    #[test]
    fn a_world_readable_secret_file_is_refused() {
        let (d, _) = with_secret("");
        let secret = d.path().join("s.secret");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "apiVersion: {API_VERSION}\nkind: NotifyConfig\ntargets:\n  - name: a\n    url: http://h/\n    secret_file: s.secret\n    template: json\n"
        );
        let (_, _, why) = reason(NotifyConfig::parse(&d.path().join("n.yaml"), &text));
        assert!(why.contains("chmod 600"), "{why}");
    }

    #[test]
    fn url_env_is_read_and_never_repeated_in_errors() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("s.secret");
        fs::write(&secret, "0123456789abcdef0123").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "apiVersion: {API_VERSION}\nkind: NotifyConfig\ntargets:\n  - name: a\n    url_env: SLACK_URL\n    secret_file: s.secret\n    template: slack\n"
        );
        let file = d.path().join("n.yaml");
        let ok = NotifyConfig::parse_with_env(&file, &text, |v| {
            (v == "SLACK_URL").then(|| "https://hooks.example/services/T0/B0/TOKEN".into())
        })
        .unwrap();
        assert_eq!(ok.targets[0].url.path(), "/services/T0/B0/TOKEN");
        assert!(!format!("{:?}", ok.targets[0]).contains("TOKEN"));
        let bad = NotifyConfig::parse_with_env(&file, &text, |_| Some("ftp://x/TOKEN".into()));
        let (line, _, why) = reason(bad);
        assert_eq!(line, 5);
        assert!(!why.contains("TOKEN"), "{why}");
    }

    #[test]
    fn a_url_with_credentials_is_refused() {
        let (_d, r) = with_secret(
            "  - name: a\n    url: https://user:pw@h/\n    secret_file: s.secret\n    template: json\n",
        );
        assert!(reason(r).2.contains("credentials"));
    }

    #[test]
    fn a_target_without_a_secret_is_refused() {
        let (_d, r) = with_secret("  - name: a\n    url: http://h/\n    template: json\n");
        assert!(reason(r).2.contains("exactly one of"));
    }

    #[test]
    fn a_missing_secret_env_var_is_refused() {
        let (_d, r) = with_secret(
            "  - name: a\n    url: http://h/\n    secret_env: DRIFTWALL_TEST_SURELY_UNSET_VAR\n    template: json\n",
        );
        assert!(reason(r).2.contains("is not set"));
    }

    #[test]
    fn duplicate_target_names_are_refused() {
        let t = "  - name: a\n    url: http://h/\n    secret_file: s.secret\n    template: json\n";
        let (_d, r) = with_secret(&format!("{t}{t}"));
        assert!(reason(r).2.contains("twice"));
    }

    #[test]
    fn an_unknown_template_is_refused() {
        let (_d, r) = with_secret(
            "  - name: a\n    url: http://h/\n    secret_file: s.secret\n    template: teams\n",
        );
        assert!(reason(r).2.contains("teams"));
    }

    #[test]
    fn the_example_policies_notify_yaml_is_valid() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/notify.yaml");
        let text = fs::read_to_string(&file).unwrap();
        let c = NotifyConfig::parse_with_env(&file, &text, |var| {
            Some(if var.ends_with("_URL") {
                "http://127.0.0.1:9001/slack".into()
            } else {
                "an-example-secret-of-enough-bytes".into()
            })
        })
        .unwrap();
        let names: Vec<&str> = c.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["local-webhook", "local-slack", "local-cloudevents"]);
        assert!(
            c.targets
                .iter()
                .all(|t| t.url.host_str() == Some("127.0.0.1"))
        );
    }

    #[test]
    fn a_ca_file_needs_https_and_a_certificate() {
        let (d, _) = with_secret("");
        fs::write(d.path().join("ca.pem"), "not a certificate\n").unwrap();
        let doc = |url: &str| {
            format!(
                "apiVersion: {API_VERSION}\nkind: NotifyConfig\ntargets:\n  - name: a\n    url: {url}\n    secret_file: s.secret\n    template: json\n    ca_file: ca.pem\n"
            )
        };
        let file = d.path().join("n.yaml");
        let (line, _, why) = reason(NotifyConfig::parse(&file, &doc("http://h/")));
        assert_eq!(line, 8);
        assert!(why.contains("https"), "{why}");
        let (_, _, why) = reason(NotifyConfig::parse(&file, &doc("https://h/")));
        assert!(why.contains("no PEM certificate"), "{why}");
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("30d").is_err());
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_its_max() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(500), Duration::from_secs(1));
    }
}
