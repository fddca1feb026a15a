//! Pushing the content store to an IPFS node over its HTTP RPC API (Kubo's `/api/v0`, which
//! js-ipfs serves too).
//!
//! Each file goes in as one raw block (`block/put`, `cid-codec=raw`, sha2-256, pinned), so the
//! node holds it under exactly the CID the local store, the manifests and the token metadata use,
//! whatever its size. The node's answer is checked against that CID.

use std::time::Duration;

use serde::Deserialize;

use super::EconomyError;

/// How long one request may take (a large file to a remote node included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Tries of one `block/put` when the node answers with a server error.
const ATTEMPTS: u32 = 3;

/// The pause before the second try (doubled before the third).
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// An IPFS node's HTTP RPC API. Blocking: it owns a small async runtime and must not be used
/// from inside another one.
#[derive(Debug)]
pub struct IpfsNode {
    url: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// The node's answer to `block/put`.
#[derive(Deserialize)]
struct PutAnswer {
    #[serde(rename = "Key")]
    key: String,
}

/// The node's error body.
#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(rename = "Message")]
    message: String,
}

impl IpfsNode {
    /// The node whose RPC API is at `url` (`http://host:port`, as Kubo's `Addresses.API` serves
    /// it). Nothing is sent until a block is pushed.
    pub fn new(url: &str) -> Result<Self, EconomyError> {
        let url = url.trim_end_matches('/').to_string();
        let refuse = |message: String| EconomyError::Ipfs {
            url: url.clone(),
            message,
        };
        if !url.starts_with("http://") {
            return Err(refuse(
                "only http:// RPC endpoints are supported (a local node, or a tunnel to one)"
                    .into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| refuse(format!("cannot build an HTTP client: {error}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| refuse(format!("cannot start the async runtime: {error}")))?;
        Ok(Self {
            url,
            client,
            runtime,
        })
    }

    /// The RPC API's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stores `bytes` on the node as a pinned raw block and checks that it is kept under `cid`
    /// (the bytes' CIDv1, raw, sha2-256).
    pub fn put_block(&self, cid: &str, bytes: &[u8]) -> Result<(), EconomyError> {
        let refuse = |message: String| EconomyError::Ipfs {
            url: self.url.clone(),
            message,
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(refuse(
                "the IPFS client blocks; call it outside an async runtime".into(),
            ));
        }
        // `format=raw` is the older spelling of `cid-codec=raw`; js-ipfs reads only the former,
        // Kubo accepts both when they agree. Big blocks (over 1 MiB) are Kubo's opt-in.
        let endpoint = format!(
            "{}/api/v0/block/put?cid-codec=raw&format=raw&mhtype=sha2-256&mhlen=32&pin=true&allow-big-block=true",
            self.url
        );
        // The boundary holds the bytes' own hash, which the bytes cannot contain.
        let boundary = format!("autonomy-{cid}");
        let body = multipart_body(&boundary, bytes);
        // Storing a block is idempotent: a node's passing failure (5xx) is tried again.
        let mut attempt = 0;
        let answer = loop {
            attempt += 1;
            let (status, answer) = self
                .runtime
                .block_on(async {
                    let response = self
                        .client
                        .post(&endpoint)
                        .header(
                            "content-type",
                            format!("multipart/form-data; boundary={boundary}"),
                        )
                        .body(body.clone())
                        .send()
                        .await?;
                    let status = response.status();
                    Ok::<_, reqwest::Error>((status, response.bytes().await?))
                })
                .map_err(|error| {
                    refuse(format!(
                        "cannot reach the node ({error}); is it running? ([store] ipfs in autonomy.toml)"
                    ))
                })?;
            if status.is_success() {
                break answer;
            }
            let message = serde_json::from_slice::<ErrorAnswer>(&answer)
                .map(|error| error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&answer).into_owned());
            if status.is_server_error() && attempt < ATTEMPTS {
                tracing::warn!(url = %self.url, cid, %status, message, attempt, "block/put failed; trying again");
                std::thread::sleep(RETRY_PAUSE * attempt);
                continue;
            }
            return Err(refuse(format!(
                "block/put of {cid} ({} bytes) refused: {status} {message}",
                bytes.len()
            )));
        };
        let stored: PutAnswer = serde_json::from_slice(&answer).map_err(|error| {
            refuse(format!(
                "block/put answered {:?}: {error}",
                String::from_utf8_lossy(&answer)
            ))
        })?;
        if stored.key != cid {
            return Err(refuse(format!(
                "the node stored the block as {} instead of {cid}",
                stored.key
            )));
        }
        tracing::debug!(url = %self.url, cid, bytes = bytes.len(), "pushed to IPFS");
        Ok(())
    }
}

/// A `multipart/form-data` body with one part, `file`, holding `bytes`.
fn multipart_body(boundary: &str, bytes: &[u8]) -> Vec<u8> {
    let head = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"block\"\r\ncontent-type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let mut body = Vec::with_capacity(head.len() + bytes.len() + tail.len());
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(bytes);
    body.extend_from_slice(tail.as_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_endpoints_are_accepted() {
        let error = IpfsNode::new("https://ipfs.example:5001")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("https://ipfs.example:5001") && error.contains("http://"),
            "{error}"
        );
        let node = IpfsNode::new("http://127.0.0.1:5001/").unwrap();
        assert_eq!(node.url(), "http://127.0.0.1:5001");
    }

    #[test]
    fn the_body_is_one_file_part() {
        let body = multipart_body("b0undary", b"hello\n");
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("--b0undary\r\n"));
        assert!(text.contains("name=\"file\""));
        assert!(text.ends_with("\r\n\r\nhello\n\r\n--b0undary--\r\n"));
    }

    #[test]
    fn an_unreachable_node_is_named() {
        // Port 9 (discard) on localhost is closed on any test machine.
        let node = IpfsNode::new("http://127.0.0.1:9").unwrap();
        let error = node
            .put_block(
                "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am",
                b"hello\n",
            )
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("127.0.0.1:9") && error.contains("cannot reach"),
            "{error}"
        );
    }
}
