//! Prints one notice as each template renders it, with the signature header a target
//! with the secret `example-secret-0123456789` would send. The bodies in the crate
//! README come from here: `cargo run --release -p driftwall-notify --example render`.
use driftwall_notify::{
    DriftNotice, Template,
    render::{SendContext, render},
    signing::{SigningSecret, signature_header},
};

fn main() -> Result<(), String> {
    let notice = DriftNotice {
        suppressed: 2,
        ..DriftNotice::example()
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
