//! What a notice costs the caller and the delivery task: `enqueue` (filters, cooldown
//! and one fsynced redb transaction), and rendering plus signing one body.
use std::{hint::black_box, os::unix::fs::PermissionsExt, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use driftwall_notify::{
    DriftNotice, NotifyConfig, Outbox, Template,
    render::{SendContext, render},
    signing::{SigningSecret, signature_header},
};

fn notice() -> DriftNotice {
    DriftNotice::example()
}

/// An outbox with one target whose backlog bound the benchmark never reaches, so every
/// iteration stores (and fsyncs) rather than counting a drop.
fn outbox(dir: &std::path::Path, extra: &str) -> Outbox {
    let secret = dir.join("secret");
    std::fs::write(&secret, "bench-secret-0123456789").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "apiVersion: driftwall.dev/v1alpha1\nkind: NotifyConfig\ntargets:\n  - name: t\n    url: http://127.0.0.1:9/\n    secret_file: secret\n    template: json\n    max_pending: 1000000\n{extra}"
    );
    let cfg = NotifyConfig::parse(&dir.join("notify.yaml"), &text).unwrap();
    Outbox::open(&dir.join("outbox.redb"), &cfg).unwrap()
}

fn enqueue(c: &mut Criterion) {
    let mut g = c.benchmark_group("enqueue");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    let n = notice();
    let dir = tempfile::tempdir().unwrap();
    let queued = outbox(dir.path(), "");
    g.bench_function("durable_one_target", |b| {
        b.iter(|| queued.enqueue(black_box(&n)).unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let batched = outbox(dir.path(), "");
    let batch = vec![n.clone(); 64];
    g.bench_function("durable_batch_of_64", |b| {
        b.iter(|| batched.enqueue_all(black_box(&batch)).unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let cooled = outbox(dir.path(), "    cooldown: 1h\n");
    cooled.enqueue(&n).unwrap();
    g.bench_function("suppressed_by_cooldown", |b| {
        b.iter(|| cooled.enqueue(black_box(&n)).unwrap())
    });
    g.finish();
}

fn render_and_sign(c: &mut Criterion) {
    let mut g = c.benchmark_group("render_and_sign");
    let n = notice();
    let secret = SigningSecret::new(b"bench-secret-0123456789".to_vec()).unwrap();
    let ctx = SendContext {
        idempotency_key: "dw-6f1d0c3e9a8b47d2b5e4c1a0f9e8d7c6",
        timestamp: 1_795_377_600,
        target: "t",
    };
    for (name, template) in [
        ("json", Template::Json),
        ("slack", Template::Slack),
        ("cloudevents", Template::Cloudevents),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let body = render(template, black_box(&n), ctx);
                signature_header(&secret, &body.bytes)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, enqueue, render_and_sign);
criterion_main!(benches);
