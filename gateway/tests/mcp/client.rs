//! A minimal MCP-over-HTTP client for the tests: one HTTP/1.1 connection per request (hyper),
//! JSON or SSE answers decoded into JSON-RPC messages, each with the time it arrived.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The protocol version the tests negotiate (the Python SDK 1.x default).
pub(crate) const PROTOCOL: &str = "2025-11-25";

/// One HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// JSON-RPC messages in order with their arrival times (one for a JSON answer).
    pub(crate) messages: Vec<(Value, Duration)>,
    pub(crate) text: String,
}

impl Reply {
    /// The JSON-RPC response (the message with an `id`).
    pub(crate) fn response(&self) -> &Value {
        self.messages
            .iter()
            .map(|(m, _)| m)
            .find(|m| m.get("id").is_some())
            .unwrap_or_else(|| panic!("no JSON-RPC response in {self:?}"))
    }

    /// `result` of the response.
    pub(crate) fn result(&self) -> &Value {
        let response = self.response();
        response
            .get("result")
            .unwrap_or_else(|| panic!("not a result: {response}"))
    }
}

/// A caller of one MCP endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) addr: SocketAddr,
    pub(crate) headers: Vec<(String, String)>,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr, authorization: Option<&str>) -> Self {
        let mut headers = Vec::new();
        if let Some(value) = authorization {
            headers.push(("authorization".to_owned(), value.to_owned()));
        }
        Self { addr, headers }
    }

    pub(crate) fn with(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A JSON-RPC request `method(params)` with id 1.
    pub(crate) async fn rpc(&self, method: &str, params: Value) -> Reply {
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        self.post(&body).await
    }

    /// `tools/call name(arguments)`, optionally asking for progress.
    pub(crate) async fn call(&self, name: &str, arguments: Value, progress: bool) -> Reply {
        let mut params = json!({ "name": name, "arguments": arguments });
        if progress {
            params["_meta"] = json!({ "progressToken": "p1" });
        }
        self.rpc("tools/call", params).await
    }

    /// The `Host` header: a test's own, else the address connected to.
    fn host(&self) -> String {
        self.headers.iter().find(|(n, _)| n == "host").map_or_else(
            || format!("127.0.0.1:{}", self.addr.port()),
            |(_, v)| v.clone(),
        )
    }

    pub(crate) async fn post(&self, body: &Value) -> Reply {
        let mut request = Request::post("/mcp")
            .header("host", self.host())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL);
        for (name, value) in self.headers.iter().filter(|(n, _)| n != "host") {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        send(self.addr, request).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        let mut request = Request::get(path).header("host", self.host());
        for (name, value) in self.headers.iter().filter(|(n, _)| n != "host") {
            request = request.header(name.as_str(), value.as_str());
        }
        send(self.addr, request.body(Full::new(Bytes::new())).unwrap()).await
    }
}

async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Reply {
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .expect("no answer within 60 s")
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let sse = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut body = response.into_body();
    let mut text = String::new();
    let mut messages = Vec::new();
    let mut pending = String::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        let chunk = String::from_utf8_lossy(&data).into_owned();
        text.push_str(&chunk);
        if sse {
            pending.push_str(&chunk);
            // Events end with a blank line; decode each complete one as it arrives.
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if let Ok(message) = serde_json::from_str::<Value>(&data.join("\n")) {
                    messages.push((message, started.elapsed()));
                }
            }
        }
    }
    if !sse && let Ok(message) = serde_json::from_str::<Value>(&text) {
        messages.push((message, started.elapsed()));
    }
    Reply {
        status,
        headers,
        messages,
        text,
    }
}
