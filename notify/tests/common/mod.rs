//! Shared pieces of the integration tests: notices, config files, a programmable
//! HTTP receiver written with hyper, and a bounded wait.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use driftwall_notify::{
    DriftNotice, NotifyConfig, Outbox, OutboxError,
    signing::{SigningSecret, verify_signature},
};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub const SECRET: &str = "driftwall-test-secret-0123456789";

/// The example notice, about `workload` and `rule`, from process `pid`.
pub fn notice(workload: &str, rule: &str, pid: u32) -> DriftNotice {
    let mut n = DriftNotice::example();
    n.workload = workload.into();
    n.profile = Some(workload.into());
    n.rule = rule.into();
    n.event.pid = pid;
    n
}

/// Writes `secret` to a 0600 file and a notify.yaml with `targets` (YAML list items,
/// which may say `secret_file: secret`), then loads it.
pub fn config(dir: &Path, targets: &str) -> (PathBuf, NotifyConfig) {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.join("notify.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: driftwall.dev/v1alpha1\nkind: NotifyConfig\ntargets:\n{targets}"),
    )
    .unwrap();
    let cfg = NotifyConfig::load(&path).unwrap();
    (path, cfg)
}

/// A target list item for `url`.
pub fn target(name: &str, url: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    url: {url}\n    secret_file: secret\n    template: json\n    backoff: {{ initial: 20ms, max: 200ms }}\n{extra}"
    )
}

/// What the receiver does with request number `n` (0-based).
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Status(u16),
    /// Waits this long, then answers 200 (the client should have given up).
    Hang(Duration),
    /// Waits this long, then answers 200.
    SlowOk(Duration),
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub idempotency_key: String,
    pub attempt: String,
    pub body: serde_json::Value,
    /// The signature verified against the raw body with [`SECRET`].
    pub signature_ok: bool,
    /// The timestamp header equals the `timestamp` inside the signed body.
    pub timestamp_mirrored: bool,
    pub answered: u16,
}

#[derive(Default)]
pub struct ReceiverLog {
    pub requests: Mutex<Vec<Received>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

impl ReceiverLog {
    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
    /// Keys that got a 2xx, with how many times each did.
    pub fn accepted(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.requests() {
            if (200..300).contains(&r.answered) {
                *m.entry(r.idempotency_key).or_insert(0) += 1;
            }
        }
        m
    }
}

/// Serves plain HTTP on `listener` until the runtime ends, answering with `script(n)`.
pub fn serve(
    listener: TcpListener,
    script: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> Arc<ReceiverLog> {
    serve_with(listener, None, script)
}

/// [`serve`], over TLS when `tls` is given.
pub fn serve_with(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    script: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> Arc<ReceiverLog> {
    let log = Arc::new(ReceiverLog::default());
    let counter = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let secret = SigningSecret::new(SECRET.as_bytes().to_vec()).unwrap();
    let server_log = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (log, counter, script, secret) = (
                server_log.clone(),
                counter.clone(),
                script.clone(),
                secret.clone(),
            );
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (log, counter, script, secret) =
                        (log.clone(), counter.clone(), script.clone(), secret.clone());
                    async move {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let now = log.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        log.max_in_flight.fetch_max(now, Ordering::SeqCst);
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let key = header("Idempotency-Key");
                        let signature = header("X-Driftwall-Signature-256");
                        let timestamp = header("X-Driftwall-Timestamp");
                        let attempt = header("X-Driftwall-Attempt");
                        let raw = req.into_body().collect().await.map(|b| b.to_bytes());
                        let raw = raw.unwrap_or_default();
                        let answer = script(n);
                        let status = match answer {
                            Answer::Status(s) => s,
                            Answer::Hang(d) | Answer::SlowOk(d) => {
                                tokio::time::sleep(d).await;
                                200
                            }
                        };
                        let body: serde_json::Value =
                            serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
                        let timestamp_mirrored = body["timestamp"]
                            .as_u64()
                            .is_some_and(|t| timestamp.parse::<u64>().ok() == Some(t));
                        log.requests.lock().unwrap().push(Received {
                            idempotency_key: key,
                            attempt,
                            signature_ok: verify_signature(&secret, &raw, &signature).is_ok(),
                            timestamp_mirrored,
                            body,
                            answered: status,
                        });
                        log.in_flight.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                });
                match tls {
                    None => {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                    Some(acceptor) => {
                        // A client that does not trust our CA aborts the handshake here.
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                }
            });
        }
    });
    log
}

/// Serves 503 until the returned switch is set, then 200.
pub fn serve_unhealthy(listener: TcpListener) -> (Arc<AtomicBool>, Arc<ReceiverLog>) {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let log = serve(listener, move |_| {
        if h.load(Ordering::SeqCst) {
            Answer::Status(200)
        } else {
            Answer::Status(503)
        }
    });
    (healthy, log)
}

/// A localhost port that nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub async fn listen() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Waits until `cond` holds, failing the test with `what` after `limit`. A bound on
/// hangs, not a speed assertion.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running delivery task and the switch that stops it.
pub struct Delivery {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), OutboxError>>,
}

impl Delivery {
    pub fn start(outbox: &Outbox) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let o = outbox.clone();
        let task = tokio::spawn(async move {
            o.run_delivery(async {
                let _ = stopped.await;
            })
            .await
        });
        Delivery { stop, task }
    }

    /// Stops the task and fails the test if it ended with an error.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A private CA and a server certificate for `127.0.0.1` signed by it: the CA in PEM
/// (for a target's `ca_file`) and an acceptor presenting the server certificate.
pub fn private_ca_tls() -> (String, tokio_rustls::TlsAcceptor) {
    use tokio_rustls::rustls::{
        ServerConfig,
        pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    };
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
