//! The agent's configuration file: one TOML file (`/etc/driftwall/config.toml` unless
//! `--config` names another), every key of which a `driftwall run` flag overrides.
//!
//! ```toml
//! policies = "/etc/driftwall/policies"   # a policy repository, compiled at start-up…
//! # bundle = "/etc/driftwall/policy.dwb" # …or a bundle from `driftwall compile`
//! state_dir = "/var/lib/driftwall"
//! cgroup_root = "/sys/fs/cgroup"         # default: found (v2 mount, or …/unified)
//! ring_bytes = "1M"                      # each ring buffer: a power of two, 4K to 1G
//! output = "text"                        # decision lines on stdout: text | json
//! notify = "/etc/driftwall/notify.yaml"  # webhook targets (default: <policies>/notify.yaml)
//! no_notify = false
//! dry_run = false                        # report everything that would be refused, refuse nothing
//! on_exit = "keep"                       # keep | detach: the pinned programs when the agent stops
//! pin_dir = "/sys/fs/bpf/driftwall"
//!
//! [api]
//! socket = "/run/driftwall/api.sock"
//! listen = "127.0.0.1:9464"              # TCP too, with…
//! token_file = "/etc/driftwall/api.token"  # …a bearer token (mode 0600, 16+ characters)
//!
//! [log]
//! level = "info"                         # or a filter: "driftwall_enforcer=debug,info"
//! format = "text"                        # text | json
//!
//! [graph]                                # the context graph's history (see `history.rs`)
//! retention = "90d"                      # delete history older than this ("forever": never)
//! max_size = "20G"                       # and the oldest while it is larger (default: no limit)
//! memtable = "64M"                       # history held in memory before it is sealed, 1M to 1G
//! cache = "32M"                          # segment block cache, 1M to 64G
//! ```
//!
//! Sizes are bytes or a number with a binary `K`, `M`, `G` or `T` suffix; durations
//! are humantime's (`90d`, `12h`, `4w`).
//!
//! An unknown key, a value of the wrong type or out of range is an error naming the
//! file, line and column; nothing starts. On SIGHUP the agent reads the file again and
//! takes the policy path and `dry_run` from it (flags still win); a change to any other
//! key is logged as needing a restart.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    api::ApiConfig,
    history::{self, GraphSettings, Keep},
    output::OutputFormat,
    source::PolicySource,
};

/// Where the configuration is read from unless `--config` says otherwise (when it
/// does not exist, every key takes its default).
pub const DEFAULT_CONFIG: &str = "/etc/driftwall/config.toml";
/// `state_dir` unless configured.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/driftwall";

/// What happens to the pinned programs and maps when the agent stops cleanly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// They stay attached and keep enforcing the last generation; the next agent
    /// adopts them.
    #[default]
    Keep,
    /// They are unpinned and detach.
    Detach,
}

impl OnExit {
    pub fn word(self) -> &'static str {
        match self {
            OnExit::Keep => "keep",
            OnExit::Detach => "detach",
        }
    }
}

/// Log format on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The file as written: every key optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub policies: Option<PathBuf>,
    pub bundle: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub cgroup_root: Option<PathBuf>,
    #[serde(default, deserialize_with = "ring_bytes")]
    pub ring_bytes: Option<u32>,
    pub output: Option<OutputFormat>,
    pub notify: Option<PathBuf>,
    pub no_notify: Option<bool>,
    pub dry_run: Option<bool>,
    pub on_exit: Option<OnExit>,
    pub pin_dir: Option<PathBuf>,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub graph: GraphSection,
}

/// `[api]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub socket: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
}

/// `[log]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub level: Option<String>,
    pub format: Option<LogFormat>,
}

/// `[graph]`: the context graph's retention and memory (`history.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSection {
    #[serde(default, deserialize_with = "retention")]
    pub retention: Option<Keep>,
    #[serde(default, deserialize_with = "max_size")]
    pub max_size: Option<u64>,
    #[serde(default, deserialize_with = "memtable")]
    pub memtable: Option<u64>,
    #[serde(default, deserialize_with = "cache")]
    pub cache: Option<u64>,
}

/// Parses a size: bytes, or a number with a binary `K`, `M`, `G` or `T` suffix
/// (`64M` = 67108864). The error is the reason.
pub fn parse_size(text: &str) -> Result<u64, &'static str> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        Some((i, 'T' | 't')) => (&t[..i], 40),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| "not a number")?;
    n.checked_mul(1 << shift).ok_or("too large")
}

/// `key` given as text (`"64M"`): a size within `range`.
fn size_in(key: &str, text: &str, range: (u64, u64)) -> Result<u64, String> {
    let n = parse_size(text).map_err(|reason| format!("{key} {text:?}: {reason}"))?;
    history::check_size(key, n, range)
}

/// `key` in the file: a string (`"64M"`) or a number of bytes, within `range`.
fn size_value<'de, D: serde::Deserializer<'de>>(
    d: D,
    key: &str,
    range: (u64, u64),
) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Text(String),
        Bytes(u64),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => history::check_size(key, n, range),
        Size::Text(t) => size_in(key, &t, range),
    }
    .map(Some)
    .map_err(serde::de::Error::custom)
}

const MAX_SIZE_RANGE: (u64, u64) = (history::MIN_MAX_SIZE, u64::MAX);

/// `memtable`, `cache`, `max_size` as the flags parse them (`--graph-memtable 64M`).
pub fn parse_memtable(text: &str) -> Result<u64, String> {
    size_in("memtable", text, history::MEMTABLE_RANGE)
}

/// See [`parse_memtable`].
pub fn parse_cache(text: &str) -> Result<u64, String> {
    size_in("cache", text, history::CACHE_RANGE)
}

/// See [`parse_memtable`].
pub fn parse_max_size(text: &str) -> Result<u64, String> {
    size_in("max_size", text, MAX_SIZE_RANGE)
}

fn memtable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size_value(d, "memtable", history::MEMTABLE_RANGE)
}

fn cache<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size_value(d, "cache", history::CACHE_RANGE)
}

fn max_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size_value(d, "max_size", MAX_SIZE_RANGE)
}

fn retention<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Keep>, D::Error> {
    let text = String::deserialize(d)?;
    history::parse_retention(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `ring_bytes` as a size string (`"1M"`) or a number of bytes.
fn ring_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Text(String),
        Bytes(u64),
    }
    let text = match Size::deserialize(d)? {
        Size::Text(t) => t,
        Size::Bytes(n) => n.to_string(),
    };
    crate::loss::parse_ring_bytes(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// toml's message names the line and column and shows the line.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `policies` and `bundle` are both set; name one")]
    TwoSources { path: PathBuf },
    #[error("name the policy: --policies DIR or --bundle FILE, or `policies`/`bundle` in {0}")]
    NoSource(String),
    #[error("`api.listen` needs `api.token_file` (and the other way round)")]
    TcpWithoutToken,
}

impl ConfigFile {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        if file.policies.is_some() && file.bundle.is_some() {
            return Err(ConfigError::TwoSources {
                path: path.to_path_buf(),
            });
        }
        Ok(file)
    }

    /// Parses the text of a configuration file; the error names line and column.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// The file named by `--config`, else the default one if it exists, else none.
    pub fn find(explicit: Option<&Path>) -> Result<Option<(PathBuf, Self)>, ConfigError> {
        match explicit {
            Some(p) => Ok(Some((p.to_path_buf(), Self::read(p)?))),
            None => {
                let p = Path::new(DEFAULT_CONFIG);
                if p.exists() {
                    Ok(Some((p.to_path_buf(), Self::read(p)?)))
                } else {
                    Ok(None)
                }
            }
        }
    }
}

/// The `driftwall run` flags that override the file: `None` where not given.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub policies: Option<PathBuf>,
    pub bundle: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub cgroup_root: Option<PathBuf>,
    pub ring_bytes: Option<u32>,
    pub output: Option<OutputFormat>,
    pub notify: Option<PathBuf>,
    pub no_notify: bool,
    pub dry_run: Option<bool>,
    pub on_exit: Option<OnExit>,
    pub pin_dir: Option<PathBuf>,
    pub api_socket: Option<PathBuf>,
    pub api_listen: Option<SocketAddr>,
    pub api_token_file: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub graph_retention: Option<Keep>,
    pub graph_max_size: Option<u64>,
    pub graph_memtable: Option<u64>,
    pub graph_cache: Option<u64>,
}

/// The settings the agent runs with: flags over the file over the defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    pub source: PolicySource,
    pub state_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub ring_bytes: u32,
    pub output: OutputFormat,
    /// The webhook targets in effect (`notify`, else the repository's `notify.yaml`
    /// unless `no_notify`).
    pub notify: Option<PathBuf>,
    pub dry_run: bool,
    pub on_exit: OnExit,
    pub pin_dir: PathBuf,
    pub api: ApiConfig,
    pub log_level: Option<String>,
    pub log_format: LogFormat,
    /// The context graph's retention and memory.
    pub graph: GraphSettings,
    /// The file they came from, if any (SIGHUP reads it again).
    pub file: Option<PathBuf>,
}

impl Settings {
    /// Merges `flags` over `file` (read from `path`) over the defaults.
    pub fn resolve(
        flags: &Overrides,
        file: Option<(&Path, &ConfigFile)>,
    ) -> Result<Settings, ConfigError> {
        let empty = ConfigFile::default();
        let (path, f) = match file {
            Some((p, f)) => (Some(p), f),
            None => (None, &empty),
        };
        // A source named by a flag replaces the file's, whichever kind it is.
        let source = match (&flags.policies, &flags.bundle) {
            (Some(d), _) => PolicySource::Directory(d.clone()),
            (None, Some(b)) => PolicySource::BundleFile(b.clone()),
            (None, None) => match (&f.policies, &f.bundle) {
                (Some(d), _) => PolicySource::Directory(d.clone()),
                (None, Some(b)) => PolicySource::BundleFile(b.clone()),
                (None, None) => {
                    return Err(ConfigError::NoSource(path.map_or_else(
                        || format!("{DEFAULT_CONFIG} (there is none)"),
                        |p| p.display().to_string(),
                    )));
                }
            },
        };
        // A flag wins over the file, whichever of the two it is.
        let (explicit, no_notify) = if flags.notify.is_some() || flags.no_notify {
            (flags.notify.as_deref(), flags.no_notify)
        } else {
            (f.notify.as_deref(), f.no_notify == Some(true))
        };
        let notify = crate::notifications::config_path(explicit, no_notify, &source);
        let listen = flags.api_listen.or(f.api.listen);
        let token = flags
            .api_token_file
            .clone()
            .or_else(|| f.api.token_file.clone());
        let tcp = match (listen, token) {
            (Some(a), Some(t)) => Some((a, t)),
            (None, None) => None,
            _ => return Err(ConfigError::TcpWithoutToken),
        };
        Ok(Settings {
            source,
            state_dir: pick(&flags.state_dir, &f.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            cgroup_root: pick(&flags.cgroup_root, &f.cgroup_root)
                .unwrap_or_else(crate::resolve::default_cgroup_root),
            ring_bytes: flags
                .ring_bytes
                .or(f.ring_bytes)
                .unwrap_or(driftwall_abi::DEFAULT_RING_BYTES),
            output: flags.output.or(f.output).unwrap_or(OutputFormat::Text),
            notify,
            dry_run: flags.dry_run.or(f.dry_run).unwrap_or(false),
            on_exit: flags.on_exit.or(f.on_exit).unwrap_or_default(),
            pin_dir: pick(&flags.pin_dir, &f.pin_dir)
                .unwrap_or_else(|| PathBuf::from(crate::pins::DEFAULT_PIN_DIR)),
            api: ApiConfig {
                socket: pick(&flags.api_socket, &f.api.socket)
                    .unwrap_or_else(|| PathBuf::from(crate::api::DEFAULT_SOCKET)),
                tcp,
            },
            log_level: flags.log_level.clone().or_else(|| f.log.level.clone()),
            log_format: flags.log_format.or(f.log.format).unwrap_or_default(),
            graph: {
                let default = GraphSettings::default();
                GraphSettings {
                    retention: flags
                        .graph_retention
                        .or(f.graph.retention)
                        .map_or(default.retention, Keep::retention),
                    max_size: flags.graph_max_size.or(f.graph.max_size),
                    memtable: flags
                        .graph_memtable
                        .or(f.graph.memtable)
                        .unwrap_or(default.memtable),
                    cache: flags.graph_cache.or(f.graph.cache).unwrap_or(default.cache),
                }
            },
            file: path.map(Path::to_path_buf),
        })
    }

    /// The settings after the file changed (SIGHUP): what a reload takes (the policy
    /// source and dry-run) and the names of the other keys that changed, which take
    /// effect only on a restart.
    pub fn reread(&self, flags: &Overrides) -> Result<(Settings, Vec<&'static str>), ConfigError> {
        let file = match &self.file {
            Some(p) => Some((p.clone(), ConfigFile::read(p)?)),
            None => None,
        };
        let next = Settings::resolve(flags, file.as_ref().map(|(p, f)| (p.as_path(), f)))?;
        let mut restart = Vec::new();
        let mut differs = |name, changed: bool| {
            if changed {
                restart.push(name);
            }
        };
        differs("state_dir", next.state_dir != self.state_dir);
        differs("cgroup_root", next.cgroup_root != self.cgroup_root);
        differs("ring_bytes", next.ring_bytes != self.ring_bytes);
        differs("output", next.output != self.output);
        differs("notify", next.notify != self.notify);
        differs("on_exit", next.on_exit != self.on_exit);
        differs("pin_dir", next.pin_dir != self.pin_dir);
        differs(
            "api",
            format!("{:?}", next.api) != format!("{:?}", self.api),
        );
        differs(
            "log",
            next.log_level != self.log_level || next.log_format != self.log_format,
        );
        differs("graph", next.graph != self.graph);
        Ok((next, restart))
    }
}

fn pick(flag: &Option<PathBuf>, file: &Option<PathBuf>) -> Option<PathBuf> {
    flag.clone().or_else(|| file.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
policies = "/etc/driftwall/policies"
state_dir = "/var/lib/dw"
cgroup_root = "/sys/fs/cgroup/unified"
ring_bytes = "4M"
output = "json"
notify = "/etc/driftwall/notify.yaml"
dry_run = true
on_exit = "detach"
pin_dir = "/sys/fs/bpf/dw"

[api]
socket = "/run/dw/api.sock"
listen = "127.0.0.1:9464"
token_file = "/etc/dw/token"

[log]
level = "debug"
format = "json"

[graph]
retention = "30d"
max_size = "20G"
memtable = "16M"
cache = 8388608
"#;

    #[test]
    fn every_key_reads_and_flags_win() {
        let file = ConfigFile::parse(FULL).unwrap();
        let path = Path::new("/etc/driftwall/config.toml");
        let s = Settings::resolve(&Overrides::default(), Some((path, &file))).unwrap();
        assert!(
            matches!(&s.source, PolicySource::Directory(d) if d == Path::new("/etc/driftwall/policies"))
        );
        assert_eq!(s.state_dir, Path::new("/var/lib/dw"));
        assert_eq!(s.cgroup_root, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(s.ring_bytes, 4 << 20);
        assert_eq!(s.output, OutputFormat::Json);
        assert_eq!(
            s.notify.as_deref(),
            Some(Path::new("/etc/driftwall/notify.yaml"))
        );
        assert!(s.dry_run);
        assert_eq!(s.on_exit, OnExit::Detach);
        assert_eq!(s.pin_dir, Path::new("/sys/fs/bpf/dw"));
        assert_eq!(s.api.socket, Path::new("/run/dw/api.sock"));
        assert_eq!(
            s.api.tcp,
            Some((
                "127.0.0.1:9464".parse().unwrap(),
                PathBuf::from("/etc/dw/token")
            ))
        );
        assert_eq!(s.log_level.as_deref(), Some("debug"));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(
            s.graph,
            GraphSettings {
                retention: Some(std::time::Duration::from_secs(30 * 86_400)),
                max_size: Some(20 << 30),
                memtable: 16 << 20,
                cache: 8 << 20,
            }
        );

        let flags = Overrides {
            bundle: Some("/tmp/p.dwb".into()),
            state_dir: Some("/tmp/state".into()),
            ring_bytes: Some(1 << 16),
            output: Some(OutputFormat::Text),
            no_notify: true,
            dry_run: Some(false),
            on_exit: Some(OnExit::Keep),
            api_socket: Some("/tmp/api.sock".into()),
            log_format: Some(LogFormat::Text),
            graph_retention: Some(Keep::Forever),
            graph_memtable: Some(4 << 20),
            ..Overrides::default()
        };
        let s = Settings::resolve(&flags, Some((path, &file))).unwrap();
        assert_eq!(s.graph.retention, None, "--graph-retention forever wins");
        assert_eq!(s.graph.memtable, 4 << 20);
        assert_eq!(s.graph.max_size, Some(20 << 30), "not overridden");
        assert!(matches!(&s.source, PolicySource::BundleFile(b) if b == Path::new("/tmp/p.dwb")));
        assert_eq!(s.state_dir, Path::new("/tmp/state"));
        assert_eq!(s.ring_bytes, 1 << 16);
        assert_eq!(s.output, OutputFormat::Text);
        assert_eq!(s.notify, None, "--no-notify wins over the file's notify");
        assert!(!s.dry_run);
        assert_eq!(s.on_exit, OnExit::Keep);
        assert_eq!(s.api.socket, Path::new("/tmp/api.sock"));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.log_level.as_deref(), Some("debug"), "not overridden");
    }

    #[test]
    fn defaults_without_a_file() {
        let flags = Overrides {
            bundle: Some("/x.dwb".into()),
            ..Overrides::default()
        };
        let s = Settings::resolve(&flags, None).unwrap();
        assert_eq!(s.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(s.ring_bytes, driftwall_abi::DEFAULT_RING_BYTES);
        assert_eq!(s.on_exit, OnExit::Keep);
        assert!(!s.dry_run);
        assert_eq!(s.pin_dir, Path::new(crate::pins::DEFAULT_PIN_DIR));
        assert_eq!(s.api.socket, Path::new(crate::api::DEFAULT_SOCKET));
        assert_eq!(s.api.tcp, None);
        assert_eq!(s.graph, GraphSettings::default());
        let err = Settings::resolve(&Overrides::default(), None).unwrap_err();
        assert!(err.to_string().contains("name the policy"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_line() {
        let err = ConfigFile::parse("state_dir = \"/x\"\nring_byte = \"1M\"\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("unknown field `ring_byte`"), "{err}");
        let err = ConfigFile::parse("[api]\nsocket = \"/s\"\nport = 1\n").unwrap_err();
        assert!(
            err.contains("line 3") && err.contains("unknown field `port`"),
            "{err}"
        );
        let err = ConfigFile::parse("\n\nring_bytes = \"3M\"\n").unwrap_err();
        assert!(
            err.contains("line 3") && err.contains("power of two"),
            "{err}"
        );
        let err = ConfigFile::parse("on_exit = \"forever\"\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("keep"), "{err}");
        let err = ConfigFile::parse("dry_run = \"yes\"\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert_eq!(
            ConfigFile::parse("ring_bytes = 65536").unwrap().ring_bytes,
            Some(65536)
        );
        let err = ConfigFile::parse("[graph]\nretention = \"10m\"\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("at least 1h"),
            "{err}"
        );
        let err = ConfigFile::parse("[graph]\n\nmemtable = \"2G\"\n").unwrap_err();
        assert!(
            err.contains("line 3") && err.contains("expected 1M to 1G"),
            "{err}"
        );
        let err = ConfigFile::parse("[graph]\nmax_size = \"lots\"\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("not a number"),
            "{err}"
        );
        let err = ConfigFile::parse("[graph]\nretain = \"1d\"\n").unwrap_err();
        assert!(err.contains("unknown field `retain`"), "{err}");
        assert_eq!(
            ConfigFile::parse("[graph]\nretention = \"forever\"\n")
                .unwrap()
                .graph
                .retention,
            Some(Keep::Forever)
        );
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size(" 64M "), Ok(64 << 20));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("M"), Err("not a number"));
        assert_eq!(parse_size("1.5G"), Err("not a number"));
        assert_eq!(parse_size("99999999999T"), Err("too large"));
        assert_eq!(parse_memtable("16M"), Ok(16 << 20));
        assert!(
            parse_max_size("1M")
                .unwrap_err()
                .contains("expected at least 64M")
        );
        assert!(parse_cache("0").is_err());
    }

    #[test]
    fn a_file_naming_both_sources_or_tcp_without_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "policies = \"/p\"\nbundle = \"/b\"\n").unwrap();
        assert!(matches!(
            ConfigFile::read(&p),
            Err(ConfigError::TwoSources { .. })
        ));
        let file = ConfigFile::parse("bundle = \"/b\"\n[api]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        assert!(matches!(
            Settings::resolve(&Overrides::default(), Some((&p, &file))),
            Err(ConfigError::TcpWithoutToken)
        ));
    }

    #[test]
    fn a_reread_takes_source_and_dry_run_and_names_what_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "bundle = \"/a.dwb\"\n").unwrap();
        let file = ConfigFile::read(&p).unwrap();
        let flags = Overrides::default();
        let s = Settings::resolve(&flags, Some((&p, &file))).unwrap();
        std::fs::write(
            &p,
            "bundle = \"/b.dwb\"\ndry_run = true\nstate_dir = \"/elsewhere\"\n[graph]\nretention = \"7d\"\n",
        )
        .unwrap();
        let (next, restart) = s.reread(&flags).unwrap();
        assert!(matches!(&next.source, PolicySource::BundleFile(b) if b == Path::new("/b.dwb")));
        assert!(next.dry_run);
        assert_eq!(restart, vec!["state_dir", "graph"]);
    }
}
