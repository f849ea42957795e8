//! Prints one notice as each template renders it, with the signature header a target
//! with the secret `example-secret-0123456789` would send. The bodies in the crate
//! README come from here: `cargo run --release -p driftwall-notify --example render`.
use driftwall_notify::{
    ChainProcess, DriftEvent, DriftNotice, Severity, Template, Verdict,
    render::{SendContext, render},
    signing::{SigningSecret, signature_header},
};

fn main() -> Result<(), String> {
    let notice = DriftNotice {
        event: DriftEvent {
            time: "2026-11-22T20:00:00Z".into(),
            host: "node-1".into(),
            hook: "exec".into(),
            verdict: Verdict::Deny,
            pid: 4242,
            uid: 33,
            exe: "/tmp/dropper".into(),
            argv: vec!["/tmp/dropper".into(), "--beacon".into()],
        },
        workload: "demo-web".into(),
        profile: Some("demo-web".into()),
        rule: "profile:demo-web:exec".into(),
        severity: Severity::High,
        bundle_hash: "sha256:9f2c…".into(),
        source_commit: Some("5f5ced6".into()),
        flashback: vec![
            ChainProcess {
                pid: 812,
                exe: "/opt/demo/bin/web-server".into(),
                argv: vec!["web-server".into(), "--port=8080".into()],
                uid: 33,
                start_time: "2026-11-22T19:00:00Z".into(),
            },
            ChainProcess {
                pid: 4240,
                exe: "/bin/sh".into(),
                argv: vec!["sh".into(), "-c".into(), "curl -o /tmp/dropper …".into()],
                uid: 33,
                start_time: "2026-11-22T19:59:58Z".into(),
            },
        ],
        suppressed: 2,
    };
    let secret = SigningSecret::new(b"example-secret-0123456789".to_vec())?;
    let ctx = SendContext {
        idempotency_key: "dw-6f1d0c3e9a8b47d2b5e4c1a0f9e8d7c6",
        timestamp: 1_795_377_600,
        target: "local-webhook",
    };
    for template in [Template::Json, Template::Slack, Template::Cloudevents] {
        let body = render(template, &notice, ctx);
        let pretty: serde_json::Value =
            serde_json::from_slice(&body.bytes).map_err(|e| e.to_string())?;
        println!("== {template:?} ({})", body.content_type);
        println!(
            "X-Driftwall-Signature-256: {}",
            signature_header(&secret, &body.bytes)
        );
        println!(
            "{}",
            serde_json::to_string_pretty(&pretty).map_err(|e| e.to_string())?
        );
    }
    Ok(())
}
