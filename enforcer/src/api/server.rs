//! The listeners and the HTTP plumbing: a unix socket (0600, in a 0700 directory)
//! always, TCP with a bearer token only when configured; HTTP/1.1 by hyper; routing to
//! the [`handlers`](super::handlers); JSON errors.
use std::{
    convert::Infallible,
    net::SocketAddr,
    os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};

use super::{ApiState, handlers, query::ApiError};

/// The response body: a whole buffer, or a stream of lines.
pub type Body = BoxBody<Bytes, Infallible>;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the API listens.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The unix socket (default [`DEFAULT_SOCKET`](super::DEFAULT_SOCKET)).
    pub socket: PathBuf,
    /// TCP address and the file holding its bearer token, when configured.
    pub tcp: Option<(SocketAddr, PathBuf)>,
}

/// Why the API could not start; the agent refuses to start with it.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "another agent is running: it answers on {0} (stop it first, or give this one --api-socket)"
    )]
    LiveAgent(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("API socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API token file {path}: {reason}")]
    Token { path: PathBuf, reason: String },
    #[error("API TCP listener {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The bound listeners, before serving.
pub struct Listeners {
    unix: UnixListener,
    socket: PathBuf,
    tcp: Option<(TcpListener, Arc<Vec<u8>>)>,
}

impl Listeners {
    /// Binds the unix socket (replacing a stale one, refusing a live one) and, when
    /// configured, the TCP listener after its token file is read and checked.
    pub fn bind(config: &ApiConfig) -> Result<Listeners, ListenError> {
        // The token first: a misconfigured TCP listener must not leave a socket behind.
        let token = match &config.tcp {
            Some((_, file)) => Some(read_token(file)?),
            None => None,
        };
        let unix = bind_unix(&config.socket)?;
        let tcp = match (&config.tcp, token) {
            (Some((addr, _)), Some(token)) => {
                let std = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| ListenError::Tcp {
                        addr: *addr,
                        source,
                    });
                let std = match std {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = std::fs::remove_file(&config.socket);
                        return Err(e);
                    }
                };
                let listener = TcpListener::from_std(std).map_err(|source| ListenError::Tcp {
                    addr: *addr,
                    source,
                })?;
                Some((listener, Arc::new(token)))
            }
            _ => None,
        };
        Ok(Listeners {
            unix,
            socket: config.socket.clone(),
            tcp,
        })
    }

    /// The TCP address actually bound (port 0 picks one).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until the returned server is dropped.
    pub fn serve(self, state: Arc<ApiState>) -> ApiServer {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut tasks = Vec::new();
        let (unix, st, lim) = (self.unix, Arc::clone(&state), Arc::clone(&limit));
        tasks.push(tokio::spawn(async move {
            loop {
                match unix.accept().await {
                    Ok((stream, _)) => connection(stream, Arc::clone(&st), None, &lim).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "API: accept on the unix socket failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
        if let Some((tcp, token)) = self.tcp {
            tasks.push(tokio::spawn(async move {
                loop {
                    match tcp.accept().await {
                        Ok((stream, _)) => {
                            connection(stream, Arc::clone(&state), Some(Arc::clone(&token)), &limit)
                                .await
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "API: accept on TCP failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
        }
        ApiServer {
            socket: self.socket,
            tasks,
        }
    }
}

/// The running API. Dropping it stops accepting and removes the socket file.
pub struct ApiServer {
    socket: PathBuf,
    tasks: Vec<JoinHandle<()>>,
}

impl ApiServer {
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn bind_unix(path: &Path) -> Result<UnixListener, ListenError> {
    let io = |source| ListenError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ListenError::NotASocket(path.to_path_buf()));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ListenError::LiveAgent(path.to_path_buf())),
            // Nobody listens: a dead agent's socket.
            Err(_) => {
                tracing::info!(socket = %path.display(), "replacing a stale API socket");
                std::fs::remove_file(path).map_err(io)?;
            }
        },
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Reads a bearer token: a file of mode 0600 (or stricter) holding at least 16
/// characters (surrounding whitespace is not part of it).
fn read_token(path: &Path) -> Result<Vec<u8>, ListenError> {
    let err = |reason: String| ListenError::Token {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "mode {mode:04o} lets others read it; chmod 0600 it"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(err("the token must be at least 16 characters".into()));
    }
    Ok(token.as_bytes().to_vec())
}

/// Serves one connection in its own task, at most [`MAX_CONNECTIONS`] at once.
async fn connection<S>(
    stream: S,
    state: Arc<ApiState>,
    token: Option<Arc<Vec<u8>>>,
    limit: &Arc<Semaphore>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(permit) = Arc::clone(limit).acquire_owned().await else {
        return;
    };
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req| {
            let state = Arc::clone(&state);
            let token = token.clone();
            async move { Ok::<_, Infallible>(respond(req, &state, token.as_deref()).await) }
        });
        let result = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service)
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "API connection ended with an error");
        }
        drop(permit);
    });
}

/// Authenticates, routes, and turns errors into JSON.
async fn respond(
    req: Request<Incoming>,
    state: &Arc<ApiState>,
    token: Option<&Vec<u8>>,
) -> Response<Body> {
    if let Some(token) = token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !constant_time_eq(given, token) {
            return error(&ApiError::Unauthorized);
        }
    }
    match route(req, state).await {
        Ok(r) => r,
        Err(e) => error(&e),
    }
}

use crate::notifications::RetrySelection;

async fn route(req: Request<Incoming>, state: &Arc<ApiState>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let q = query.as_deref();
    let method = req.method().clone();
    let expect = |m: Method| {
        if method == m {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed(format!("{method} {path}")))
        }
    };
    match path.as_str() {
        "/v1/status" => {
            expect(Method::GET)?;
            handlers::status(state, q)
        }
        "/v1/flashback" => {
            expect(Method::GET)?;
            handlers::flashback(state, q).await
        }
        "/v1/events" => {
            expect(Method::GET)?;
            handlers::events(state, q)
        }
        "/v1/alerts" => {
            expect(Method::POST)?;
            let body = read_body(req).await?;
            handlers::alert(state, q, body).await
        }
        "/v1/bundle" => {
            expect(Method::POST)?;
            let body = read_body_limited(req, BUNDLE_BODY).await?;
            handlers::load_bundle(state, q, body).await
        }
        "/metrics" => {
            expect(Method::GET)?;
            handlers::metrics(state, q).await
        }
        "/v1/notifications" => {
            expect(Method::GET)?;
            handlers::notifications(state, q).await
        }
        "/v1/notifications/retry" => {
            expect(Method::POST)?;
            handlers::retry_notifications(state, q, RetrySelection::All).await
        }
        p => {
            if let Some(id) = p.strip_prefix("/v1/processes/")
                && !id.is_empty()
                && !id.contains('/')
            {
                expect(Method::GET)?;
                let id = percent_decode(id)?;
                return handlers::process(state, q, &id).await;
            }
            if let Some(id) = p
                .strip_prefix("/v1/notifications/")
                .and_then(|rest| rest.strip_suffix("/retry"))
            {
                expect(Method::POST)?;
                let id: u64 = id
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a dead-letter id")))?;
                return handlers::retry_notifications(state, q, RetrySelection::One(id)).await;
            }
            Err(ApiError::NotFound(format!("no endpoint {p}")))
        }
    }
}

/// The largest request body accepted (bundles excepted).
pub const MAX_BODY: usize = 64 * 1024;
/// The largest body of `POST /v1/bundle`: the largest bundle the agent reads.
pub const BUNDLE_BODY: usize = driftwall_compiler::bundle::MAX_BUNDLE_BYTES as usize;

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    read_body_limited(req, MAX_BODY).await
}

async fn read_body_limited(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    // A declared length over the limit is refused before a byte is read.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge(limit)),
        Err(e) => Err(ApiError::BadRequest(format!("reading the body: {e}"))),
    }
}

fn percent_decode(text: &str) -> Result<String, ApiError> {
    // A path segment decodes as a form value would, but `+` stays `+`.
    let escaped = text.replace('+', "%2B");
    let decoded: String = form_urlencoded::parse(format!("x={escaped}").as_bytes())
        .map(|(_, v)| v.into_owned())
        .next()
        .unwrap_or_default();
    if decoded.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "control characters in the path".into(),
        ));
    }
    Ok(decoded)
}

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, y) in b.iter().enumerate() {
        diff |= a.get(i).copied().unwrap_or(0) ^ y;
    }
    diff == 0
}

/// A whole response.
pub fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Result<Response<Body>, ApiError> {
    let mut text = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    text.push(b'\n');
    Ok(full(status, "application/json", text))
}

/// The JSON error body `{"error": …, "status": …}`.
pub fn error(e: &ApiError) -> Response<Body> {
    let status = e.status();
    let body = serde_json::json!({ "error": e.to_string(), "status": status.as_u16() });
    let mut r = full(status, "application/json", format!("{body}\n"));
    if matches!(e, ApiError::Unauthorized) {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// A streamed response of newline-delimited JSON: lines sent to the returned sender
/// go out as chunks; the stream ends when the sender is dropped.
pub fn ndjson_stream(capacity: usize) -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (tx, rx) = mpsc::channel(capacity);
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    (tx, r)
}

/// A body fed by a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdeg", b"abcdef"));
        assert!(!constant_time_eq(b"abcde", b"abcdef"));
        assert!(!constant_time_eq(b"abcdefg", b"abcdef"));
        assert!(!constant_time_eq(b"", b"abcdef"));
        assert!(!constant_time_eq(b"\0\0\0\0\0\0\0\0\0", b"abc\0\0\0\0\0\0"));
    }

    #[test]
    fn path_segments_decode() {
        assert_eq!(percent_decode("a%3Ab").unwrap(), "a:b");
        assert_eq!(percent_decode("a+b").unwrap(), "a+b");
        assert!(percent_decode("a%0Ab").is_err());
    }
}
