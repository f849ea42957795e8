//! Reading what a client sends: query parameters, process and decision ids, times, the
//! alert body. Every defect is an [`ApiError`] that becomes a `400` with a JSON body.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Component, Path},
};

use driftwall_ctxgraph::{Locator, ProcessKey, Severity};
use hyper::StatusCode;
use serde::Deserialize;

/// Why a request failed; each maps to an HTTP status and a JSON `{"error": …}` body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Internal(String),
    /// The request was understood and refused: nothing changed (a bundle that does not
    /// fit this node).
    #[error("{0}")]
    Refused(String),
    /// This agent does not do that (no reloader).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<driftwall_ctxgraph::Error> for ApiError {
    fn from(e: driftwall_ctxgraph::Error) -> Self {
        match e {
            driftwall_ctxgraph::Error::NotFound(what) => {
                ApiError::NotFound(format!("no process in the context graph matches {what}"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// The query string as a map; a parameter given twice, or not in `allowed`, is refused.
pub fn params(query: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(bad(format!(
                "unknown parameter {k:?} (expected one of: {})",
                allowed.join(", ")
            )));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(bad(format!("parameter {k:?} given twice")));
        }
    }
    Ok(out)
}

/// A process id as the API spells it: `<boot id>:<pid>:<start time ns>`, the boot id
/// as 32 hex digits, or the first 8 as the graph prints them (then of this boot).
pub fn process_id(text: &str, this_boot: u128) -> Result<ProcessKey, ApiError> {
    let err = || {
        bad(format!(
            "{text:?} is not a process id (<boot id hex>:<pid>:<start time ns>)"
        ))
    };
    let mut parts = text.split(':');
    let (Some(boot), Some(tgid), Some(start), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err());
    };
    if !boot.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err());
    }
    let boot_id = match boot.len() {
        32 => u128::from_str_radix(boot, 16).map_err(|_| err())?,
        8 => {
            let prefix = u32::from_str_radix(boot, 16).map_err(|_| err())?;
            if (this_boot >> 96) as u32 != prefix {
                return Err(ApiError::NotFound(format!(
                    "boot {boot} is not this boot; give the whole boot id (32 hex digits)"
                )));
            }
            this_boot
        }
        _ => return Err(err()),
    };
    Ok(ProcessKey {
        boot_id,
        tgid: tgid.parse().map_err(|_| err())?,
        start_time_ns: start.parse().map_err(|_| err())?,
    })
}

/// How the API spells a process: `<32 hex boot id>:<pid>:<start time ns>`.
pub fn format_process_id(key: &ProcessKey) -> String {
    format!("{:032x}:{}:{}", key.boot_id, key.tgid, key.start_time_ns)
}

/// A decision's id: `<process id>@<time ns>`.
pub fn format_decision_id(key: &ProcessKey, time_ns: u64) -> String {
    format!("{}@{time_ns}", format_process_id(key))
}

/// The process and time of a decision id.
pub fn decision_id(text: &str, this_boot: u128) -> Result<(ProcessKey, u64), ApiError> {
    let (process, time) = text.split_once('@').ok_or_else(|| {
        bad(format!(
            "{text:?} is not a decision id (<process id>@<time ns>)"
        ))
    })?;
    let time = time
        .parse()
        .map_err(|_| bad(format!("{text:?}: the time after @ is not a number")))?;
    Ok((process_id(process, this_boot)?, time))
}

/// A time: RFC 3339 (`2026-11-22T18:42:38Z`) or nanoseconds since the Unix epoch.
pub fn time(text: &str) -> Result<u64, ApiError> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| bad(format!("time {text:?} is out of range")));
    }
    humantime::parse_rfc3339_weak(text)
        .map(super::state::epoch_ns)
        .map_err(|e| {
            bad(format!(
                "time {text:?}: {e} (expected RFC 3339, e.g. 2026-11-22T18:42:38Z, or ns since the epoch)"
            ))
        })
}

/// A cgroup named by its id or by its path under the cgroup v2 mount.
pub fn cgroup(text: &str, cgroup_root: &Path) -> Result<u64, ApiError> {
    if let Ok(id) = text.parse::<u64>() {
        return Ok(id);
    }
    let rel = Path::new(text);
    if !rel.is_absolute() || rel.components().any(|c| c == Component::ParentDir) {
        return Err(bad(format!(
            "cgroup {text:?}: give a cgroup id or an absolute path under the cgroup v2 mount, without `..`"
        )));
    }
    let dir = cgroup_root.join(rel.strip_prefix("/").unwrap_or(rel));
    match std::fs::metadata(&dir) {
        // On cgroup v2 a cgroup's id is its directory's inode number.
        Ok(m) if m.is_dir() => Ok(m.ino()),
        _ => Err(ApiError::NotFound(format!(
            "no cgroup {text} under {}",
            cgroup_root.display()
        ))),
    }
}

/// The cgroup of a container: the first cgroup directory (breadth first, at most
/// `MAX_DIRS` looked at) whose name holds the container id, e.g.
/// `docker-<id>.scope` or `cri-containerd-<id>.scope`.
pub fn container(id: &str, cgroup_root: &Path) -> Result<u64, ApiError> {
    const MAX_DIRS: usize = 100_000;
    if !(12..=64).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "container {id:?}: expected 12 to 64 hex digits"
        )));
    }
    let id = id.to_ascii_lowercase();
    let mut queue = std::collections::VecDeque::from([cgroup_root.to_path_buf()]);
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                continue;
            }
            seen += 1;
            if entry.file_name().to_string_lossy().contains(&id) {
                return entry
                    .metadata()
                    .map(|m| m.ino())
                    .map_err(|e| ApiError::Internal(e.to_string()));
            }
            if seen < MAX_DIRS {
                queue.push_back(entry.path());
            }
        }
    }
    Err(ApiError::NotFound(format!(
        "no cgroup of container {id} under {}",
        cgroup_root.display()
    )))
}

/// What `GET /v1/flashback` is asked about.
#[derive(Debug, PartialEq, Eq)]
pub enum FlashbackQuery {
    /// A decision of a process at a time (its id).
    Decision { process: ProcessKey, time_ns: u64 },
    /// A locator.
    Locate(Locator),
}

/// Renderings of a Flashback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoryFormat {
    Json,
    Text,
    Dot,
}

/// The parameters of `GET /v1/flashback`: exactly one of `decision`, `process`, `pid`,
/// `cgroup`, `container`, `workload`, `ip`; `time` (default now) for the last five.
pub fn flashback_query(
    query: Option<&str>,
    this_boot: u128,
    cgroup_root: &Path,
) -> Result<(FlashbackQuery, StoryFormat), ApiError> {
    const SELECTORS: [&str; 7] = [
        "decision",
        "process",
        "pid",
        "cgroup",
        "container",
        "workload",
        "ip",
    ];
    let p = params(
        query,
        &[
            "decision",
            "process",
            "pid",
            "cgroup",
            "container",
            "workload",
            "ip",
            "time",
            "format",
        ],
    )?;
    let format = match p.get("format").map(String::as_str) {
        None | Some("json") => StoryFormat::Json,
        Some("text") => StoryFormat::Text,
        Some("dot") => StoryFormat::Dot,
        Some(other) => {
            return Err(bad(format!("format {other:?}: expected json, text or dot")));
        }
    };
    let named: Vec<&str> = SELECTORS
        .iter()
        .copied()
        .filter(|s| p.contains_key(*s))
        .collect();
    let [selector] = named.as_slice() else {
        return Err(bad(format!(
            "name exactly one of: {} (got {})",
            SELECTORS.join(", "),
            if named.is_empty() {
                "none".to_string()
            } else {
                named.join(", ")
            }
        )));
    };
    let value = p.get(*selector).map(String::as_str).unwrap_or_default();
    let time_ns = match p.get("time") {
        Some(t) => time(t)?,
        None => super::state::epoch_ns(std::time::SystemTime::now()),
    };
    if matches!(*selector, "decision" | "process") && p.contains_key("time") {
        return Err(bad(format!("{selector} takes no time")));
    }
    let q = match *selector {
        "decision" => {
            let (process, time_ns) = decision_id(value, this_boot)?;
            FlashbackQuery::Decision { process, time_ns }
        }
        "process" => FlashbackQuery::Locate(Locator::Process(process_id(value, this_boot)?)),
        "pid" => FlashbackQuery::Locate(Locator::Pid {
            tgid: value
                .parse()
                .map_err(|_| bad(format!("pid {value:?} is not a number")))?,
            time_ns,
        }),
        "cgroup" => FlashbackQuery::Locate(Locator::Cgroup {
            cgroup_id: cgroup(value, cgroup_root)?,
            time_ns,
        }),
        "container" => FlashbackQuery::Locate(Locator::Cgroup {
            cgroup_id: container(value, cgroup_root)?,
            time_ns,
        }),
        "workload" => {
            if value.is_empty() {
                return Err(bad("workload: empty name"));
            }
            FlashbackQuery::Locate(Locator::Workload {
                name: value.to_string(),
                time_ns,
            })
        }
        _ => FlashbackQuery::Locate(Locator::Ip {
            addr: value
                .parse::<IpAddr>()
                .map_err(|_| bad(format!("ip {value:?} is not an IPv4 or IPv6 address")))?,
            time_ns,
        }),
    };
    Ok((q, format))
}

/// A number or a string, as JSON clients send times and cgroups.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(u64),
    Text(String),
}

/// The body of `POST /v1/alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRequest {
    /// Who raised it, e.g. `suricata`.
    pub source: String,
    /// The alert's own words.
    pub title: String,
    pub severity: Severity,
    /// RFC 3339 or ns since the epoch.
    pub time: NumberOrText,
    pub pid: Option<u32>,
    /// A cgroup id or path.
    pub cgroup: Option<NumberOrText>,
    /// A container id (the cgroup whose directory name holds it).
    pub container: Option<String>,
    pub ip: Option<IpAddr>,
    /// A process id (`<boot>:<pid>:<start ns>`).
    pub process: Option<String>,
}

/// The longest `source` and `title` accepted.
const MAX_TEXT: usize = 4096;

impl AlertRequest {
    /// The locator of the alert and its time.
    pub fn locator(&self, this_boot: u128, cgroup_root: &Path) -> Result<Locator, ApiError> {
        if self.source.trim().is_empty() || self.source.len() > 256 {
            return Err(bad("source: 1 to 256 characters"));
        }
        if self.title.trim().is_empty() || self.title.len() > MAX_TEXT {
            return Err(bad(format!("title: 1 to {MAX_TEXT} characters")));
        }
        let time_ns = match &self.time {
            NumberOrText::Number(n) => *n,
            NumberOrText::Text(t) => time(t)?,
        };
        let named = [
            self.pid.is_some(),
            self.cgroup.is_some(),
            self.container.is_some(),
            self.ip.is_some(),
            self.process.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if named != 1 {
            return Err(bad(
                "name exactly one of: pid, cgroup, container, ip, process",
            ));
        }
        Ok(if let Some(tgid) = self.pid {
            Locator::Pid { tgid, time_ns }
        } else if let Some(c) = &self.cgroup {
            Locator::Cgroup {
                cgroup_id: match c {
                    NumberOrText::Number(n) => *n,
                    NumberOrText::Text(t) => cgroup(t, cgroup_root)?,
                },
                time_ns,
            }
        } else if let Some(c) = &self.container {
            Locator::Cgroup {
                cgroup_id: container(c, cgroup_root)?,
                time_ns,
            }
        } else if let Some(addr) = self.ip {
            Locator::Ip { addr, time_ns }
        } else {
            Locator::Process(process_id(
                self.process.as_deref().unwrap_or_default(),
                this_boot,
            )?)
        })
    }

    /// The alert's time, ns since the epoch.
    pub fn time_ns(&self) -> Result<u64, ApiError> {
        match &self.time {
            NumberOrText::Number(n) => Ok(*n),
            NumberOrText::Text(t) => time(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: u128 = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;

    #[test]
    fn process_ids_round_trip_and_short_boots_resolve_to_this_boot() {
        let key = ProcessKey {
            boot_id: BOOT,
            tgid: 42,
            start_time_ns: 1_000,
        };
        let text = format_process_id(&key);
        assert_eq!(process_id(&text, 0).unwrap(), key);
        assert_eq!(process_id("01234567:42:1000", BOOT).unwrap(), key);
        assert!(matches!(
            process_id("deadbeef:42:1000", BOOT),
            Err(ApiError::NotFound(_))
        ));
        for junk in [
            "",
            "1:2",
            "zz:1:2",
            "01234567:-1:2",
            "01234567:1:2:3",
            "0123456:1:2",
        ] {
            assert!(
                matches!(process_id(junk, BOOT), Err(ApiError::BadRequest(_))),
                "{junk}"
            );
        }
        let id = format_decision_id(&key, 77);
        assert_eq!(decision_id(&id, 0).unwrap(), (key, 77));
        assert!(decision_id("01234567:42:1000", BOOT).is_err());
    }

    #[test]
    fn times_are_rfc3339_or_nanoseconds() {
        assert_eq!(time("5").unwrap(), 5);
        assert_eq!(
            time("2026-11-22T18:42:38Z").unwrap(),
            1_795_372_958_000_000_000
        );
        assert!(time("yesterday").is_err());
        assert!(time("").is_err());
        assert!(time("99999999999999999999999").is_err());
    }

    #[test]
    fn flashback_queries_need_exactly_one_selector() {
        let root = Path::new("/nonexistent");
        let (q, f) = flashback_query(Some("pid=7&time=9&format=dot"), BOOT, root).unwrap();
        assert_eq!(
            q,
            FlashbackQuery::Locate(Locator::Pid {
                tgid: 7,
                time_ns: 9
            })
        );
        assert_eq!(f, StoryFormat::Dot);
        for bad_query in [
            "",
            "pid=1&ip=1.2.3.4",
            "pid=x",
            "ip=300.1.1.1",
            "pid=1&pid=2",
            "pid=1&colour=red",
            "pid=1&format=pdf",
            "decision=abc",
            "cgroup=relative/path",
            "cgroup=/a/../b",
            "container=xyz",
        ] {
            assert!(
                matches!(
                    flashback_query(Some(bad_query), BOOT, root),
                    Err(ApiError::BadRequest(_))
                ),
                "{bad_query}"
            );
        }
    }
}
