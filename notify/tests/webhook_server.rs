//! Debian's `webhook` server (adnanh/webhook 2.8) as a third-party verifier: its
//! `payload-hmac-sha256` rule hashes the raw body with the secret, so it accepts what
//! we sign with the right secret and refuses what we sign with another.
mod common;

use std::{
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Delivery, SECRET, config, eventually, free_port, notice};
use driftwall_notify::Outbox;

const LIMIT: Duration = Duration::from_secs(60);

/// Kills the server when the test ends, pass or fail.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn webhook_binary() -> &'static str {
    let found = Command::new("webhook")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "Debian's `webhook` server is not installed (apt-get install webhook; scripts/setup \
         installs it): this test needs it as the third-party signature verifier"
    );
    "webhook"
}

fn start_webhook(dir: &Path, port: u16) -> Server {
    let record = dir.join("record.sh");
    // $1: the Idempotency-Key header, $2: the payload webhook parsed from the body.
    std::fs::write(
        &record,
        "#!/bin/sh\nprintf '%s' \"$2\" > \"$(dirname \"$0\")/received-$1.json\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hooks = serde_json::json!([{
        "id": "driftwall",
        "execute-command": record,
        "command-working-directory": dir,
        "pass-arguments-to-command": [
            {"source": "header", "name": "Idempotency-Key"},
            {"source": "entire-payload"}
        ],
        "trigger-rule-mismatch-http-response-code": 401,
        "trigger-rule": {"match": {
            "type": "payload-hmac-sha256",
            "secret": SECRET,
            "parameter": {"source": "header", "name": "X-Driftwall-Signature-256"}
        }}
    }]);
    let hooks_path = dir.join("hooks.json");
    std::fs::write(&hooks_path, hooks.to_string()).unwrap();
    let child = Command::new(webhook_binary())
        .args([
            "-hooks",
            hooks_path.to_str().unwrap(),
            "-ip",
            "127.0.0.1",
            "-verbose",
        ])
        .args(["-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("webhook.log")).unwrap())
        .spawn()
        .unwrap();
    Server(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_webhook_accepts_our_signature_and_refuses_a_wrong_secret() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = start_webhook(dir.path(), port);
    eventually(LIMIT, "webhook listening", || async {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;

    let wrong = dir.path().join("wrong-secret");
    std::fs::write(&wrong, "not-the-secret-the-receiver-has").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!("http://127.0.0.1:{port}/hooks/driftwall");
    let target = |name: &str, template: &str, secret: &str| {
        format!(
            "  - name: {name}\n    url: {url}\n    secret_file: {secret}\n    template: {template}\n    max_attempts: 3\n    backoff: {{ initial: 20ms, max: 100ms }}\n"
        )
    };
    let (_, cfg) = config(
        dir.path(),
        &[
            target("json", "json", "secret"),
            target("slack", "slack", "secret"),
            target("cloudevents", "cloudevents", "secret"),
            target("forged", "json", "wrong-secret"),
        ]
        .concat(),
    );
    let outbox = Outbox::open(&dir.path().join("outbox.redb"), &cfg).unwrap();
    let receipt = outbox
        .enqueue(&notice("web", "profile:web:exec", 4242))
        .unwrap();
    assert_eq!(receipt.queued.len(), 4);

    let delivery = Delivery::start(&outbox);
    eventually(LIMIT, "nothing left pending", || async {
        outbox.pending().unwrap().is_empty()
    })
    .await;
    delivery.stop().await;

    for (_, target, key) in &receipt.queued {
        let file = dir.path().join(format!("received-{key}.json"));
        if target == "forged" {
            assert!(!file.exists(), "webhook ran the command for a forged body");
            continue;
        }
        eventually(
            LIMIT,
            &format!("webhook ran the hook for {target}"),
            || async { file.exists() },
        )
        .await;
        let body: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let carried = match target.as_str() {
            "json" => body["idempotency_key"].clone(),
            "cloudevents" => body["id"].clone(),
            _ => body["metadata"]["event_payload"]["idempotency_key"].clone(),
        };
        assert_eq!(carried, serde_json::json!(key), "{target}: {body}");
    }
    let dead = outbox.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "only the forged delivery is a dead letter");
    assert_eq!(dead[0].delivery.target, "forged");
    // webhook 2.8 answers a signature mismatch with 500 ("error evaluating hook"),
    // which a sender cannot tell from a server fault, so it is retried to the limit.
    assert_eq!(dead[0].delivery.attempts, 3);
    assert!(
        dead[0]
            .delivery
            .last_error
            .as_deref()
            .unwrap()
            .contains("500"),
        "{:?}",
        dead[0].delivery.last_error
    );
    let log = std::fs::read_to_string(dir.path().join("webhook.log")).unwrap();
    assert_eq!(
        log.matches("invalid payload signature").count(),
        3,
        "webhook refused exactly the forged attempts for their signature:\n{log}"
    );
}
