//! Templates: one [`DriftNotice`] rendered as the body a kind of receiver expects.
//!
//! Every body carries the send timestamp and the idempotency key inside it, so the
//! HMAC over the body also covers them (see [`crate::signing`]). Bodies are rendered
//! anew for each attempt: the timestamp is the time of *this* attempt, so a receiver
//! with a short replay window still accepts a retry made hours later, while the
//! idempotency key stays the same and lets it drop the duplicate.
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{config::Template, payload::DriftNotice};

/// The JSON envelope's `kind`, versioned with the schema.
pub const JSON_KIND: &str = "driftwall.drift.v1";
/// The CloudEvents `type`.
pub const CLOUDEVENTS_TYPE: &str = "dev.driftwall.drift.v1";

/// What identifies one send of one notice.
#[derive(Clone, Copy, Debug)]
pub struct SendContext<'a> {
    /// Stable across every attempt of the same notice to the same target.
    pub idempotency_key: &'a str,
    /// This attempt's send time, Unix seconds.
    pub timestamp: u64,
    pub target: &'a str,
}

/// A rendered request body and its media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedBody {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// Renders `notice` for `template`.
pub fn render(template: Template, notice: &DriftNotice, ctx: SendContext<'_>) -> RenderedBody {
    let (content_type, value) = match template {
        Template::Json => ("application/json", json_body(notice, ctx)),
        Template::Slack => ("application/json", slack_body(notice, ctx)),
        Template::Cloudevents => ("application/cloudevents+json", cloudevent_body(notice, ctx)),
    };
    RenderedBody {
        content_type,
        // Serialising a `Value` cannot fail: every key is a string.
        bytes: serde_json::to_vec(&value).unwrap_or_default(),
    }
}

fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

fn json_body(n: &DriftNotice, ctx: SendContext<'_>) -> Value {
    json!({
        "kind": JSON_KIND,
        "idempotency_key": ctx.idempotency_key,
        "timestamp": ctx.timestamp,
        "sent_at": rfc3339(ctx.timestamp),
        "target": ctx.target,
        "notice": n,
    })
}

fn cloudevent_body(n: &DriftNotice, ctx: SendContext<'_>) -> Value {
    json!({
        "specversion": "1.0",
        "id": ctx.idempotency_key,
        "source": format!("driftwall://{}", n.event.host),
        "type": CLOUDEVENTS_TYPE,
        "subject": format!("{}/{}", n.workload, n.rule),
        "time": n.event.time,
        "datacontenttype": "application/json",
        // Extension attribute (lowercase alphanumerics): the signed send time.
        "dwtimestamp": ctx.timestamp,
        "data": n,
    })
}

/// Slack mrkdwn treats `&`, `<` and `>` as control characters; node-supplied text must
/// not be able to mention `@channel` or forge links.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn verdict_word(n: &DriftNotice) -> &'static str {
    match n.event.verdict {
        crate::payload::Verdict::Deny => "denied",
        crate::payload::Verdict::Audit => "audited",
    }
}

fn slack_body(n: &DriftNotice, ctx: SendContext<'_>) -> Value {
    let e = &n.event;
    let peer = e
        .target
        .as_deref()
        .map(|t| format!(" to {t}"))
        .unwrap_or_default();
    let text = format!(
        "driftwall {} {} of {}{peer} in {} on {} (rule {}, severity {})",
        verdict_word(n),
        e.hook,
        e.exe,
        n.workload,
        e.host,
        n.rule,
        n.severity.as_str()
    );
    let mut chain = String::new();
    for p in &n.flashback {
        chain.push_str(&format!(
            "{} uid={} {}\n",
            p.pid,
            p.uid,
            p.argv.join(" ").replace('`', "'")
        ));
    }
    chain.push_str(&format!(
        "{} uid={} {}  <- {}",
        e.pid,
        e.uid,
        e.argv.join(" ").replace('`', "'"),
        verdict_word(n)
    ));
    // Section text is limited to 3000 characters by Slack.
    let chain = clip(&slack_escape(&chain), 2900);
    let mut context = format!(
        "id {} · sent {} · bundle {}",
        ctx.idempotency_key,
        rfc3339(ctx.timestamp),
        n.bundle_hash
    );
    if let Some(c) = &n.source_commit {
        context.push_str(&format!(" · commit {c}"));
    }
    if n.suppressed > 0 {
        context.push_str(&format!(" · {} similar suppressed", n.suppressed));
    }
    if n.dropped > 0 {
        context.push_str(&format!(
            " · {} dropped while the receiver was unreachable",
            n.dropped
        ));
    }
    let field = |k: &str, v: &str| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", clip(&slack_escape(v), 1900))});
    json!({
        "text": slack_escape(&text),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text",
                "text": clip(&format!("Drift {}: {} in {}", verdict_word(n), e.hook, n.workload), 150)}},
            {"type": "section", "fields": [
                field("Host", &e.host),
                field("Executable", &e.exe),
                field("Rule", &n.rule),
                field("Severity", n.severity.as_str()),
                field("Profile", n.profile.as_deref().unwrap_or("(none)")),
                field("Time", &e.time),
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*Flashback*\n```{chain}```")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": slack_escape(&context)}]},
        ],
        // Slack message metadata: machine-readable, and inside the signed bytes.
        "metadata": {"event_type": "driftwall_drift", "event_payload": {
            "idempotency_key": ctx.idempotency_key,
            "timestamp": ctx.timestamp,
            "workload": n.workload,
            "rule": n.rule,
            "suppressed": n.suppressed,
            "dropped": n.dropped,
        }},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::tests::sample_notice;

    const CTX: SendContext<'static> = SendContext {
        idempotency_key: "dw-0123",
        timestamp: 1_795_000_000,
        target: "t",
    };

    fn parse(b: &RenderedBody) -> Value {
        serde_json::from_slice(&b.bytes).unwrap()
    }

    #[test]
    fn json_body_carries_key_timestamp_and_the_notice() {
        let b = render(Template::Json, &sample_notice(), CTX);
        assert_eq!(b.content_type, "application/json");
        let v = parse(&b);
        assert_eq!(v["idempotency_key"], "dw-0123");
        assert_eq!(v["timestamp"], 1_795_000_000u64);
        assert_eq!(v["sent_at"], "2026-11-18T11:06:40Z");
        let back: DriftNotice = serde_json::from_value(v["notice"].clone()).unwrap();
        assert_eq!(back, sample_notice());
    }

    #[test]
    fn cloudevent_has_the_required_attributes() {
        let b = render(Template::Cloudevents, &sample_notice(), CTX);
        assert_eq!(b.content_type, "application/cloudevents+json");
        let v = parse(&b);
        for attr in ["specversion", "id", "source", "type"] {
            assert!(v[attr].is_string(), "{attr} missing");
        }
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "dw-0123");
        assert_eq!(v["source"], "driftwall://node-1");
        assert_eq!(v["dwtimestamp"], 1_795_000_000u64);
        assert_eq!(v["data"]["event"]["pid"], 4242);
    }

    #[test]
    fn slack_body_escapes_node_text_and_reports_suppressed() {
        let mut n = sample_notice();
        n.event.exe = "/tmp/<!channel>".into();
        n.suppressed = 7;
        let v = parse(&render(Template::Slack, &n, CTX));
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert!(!v.to_string().contains("<!channel>"));
        let context = v["blocks"][3]["elements"][0]["text"].as_str().unwrap();
        assert!(context.contains("7 similar suppressed"), "{context}");
        assert_eq!(v["metadata"]["event_payload"]["idempotency_key"], "dw-0123");
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("ééééé", 6), "é...");
        assert_eq!(clip("abc", 6), "abc");
    }
}
