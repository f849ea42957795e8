//! The client side, for the CLI verbs (`driftwall status`, `flashback --socket`,
//! `alert`): one HTTP/1.1 request over the agent's unix socket.
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no agent at {0}: is `driftwall run` running?")]
    NoAgent(PathBuf),
    #[error("{path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The agent answered with an error status; `message` is its `error` field.
    #[error("the agent answered {status}: {message}")]
    Status { status: StatusCode, message: String },
}

/// Sends one request to the agent at `socket` and returns the body of a 2xx answer.
/// A body is sent as JSON.
pub async fn request(
    socket: &Path,
    method: Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
) -> Result<Bytes, ClientError> {
    request_typed(socket, method, path_and_query, body, "application/json").await
}

/// [`request`], with the body's content type.
pub async fn request_typed(
    socket: &Path,
    method: Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
    content_type: &str,
) -> Result<Bytes, ClientError> {
    let stream = UnixStream::connect(socket).await.map_err(|source| {
        if matches!(
            source.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ) {
            ClientError::NoAgent(socket.to_path_buf())
        } else {
            ClientError::Connect {
                path: socket.to_path_buf(),
                source,
            }
        }
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::HOST, "driftwall");
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    let req = builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    if status.is_success() {
        Ok(bytes)
    } else {
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        Err(ClientError::Status { status, message })
    }
}
