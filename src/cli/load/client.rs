//! A minimal HTTP/1.1 keep-alive client for the load generator: one request at a time on
//! one connection, reconnecting when the server closes it. No pooling, no TLS: it measures
//! the server, not a client library.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A response: status, the `x-request-id` it carried, and its body.
pub struct Reply {
    pub status: u16,
    pub request_id: Option<String>,
    pub body: String,
}

/// One connection (opened on first use).
pub struct Conn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, stream: None }
    }

    /// Send one request (`body` = None: GET) and read its reply. On an error the
    /// connection is dropped and reopened next time.
    pub async fn send(
        &mut self,
        path: &str,
        body: Option<&str>,
        request_id: &str,
    ) -> Result<Reply> {
        let r = self.exchange(path, body, request_id).await;
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    async fn exchange(
        &mut self,
        path: &str,
        body: Option<&str>,
        request_id: &str,
    ) -> Result<Reply> {
        if self.stream.is_none() {
            self.stream = Some(BufReader::new(TcpStream::connect(self.addr).await?));
        }
        let addr = self.addr;
        let s = self.stream.as_mut().context("no stream")?;
        let req = match body {
            Some(b) => format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-Request-Id: {request_id}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ),
            None => format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Request-Id: {request_id}\r\n\r\n"),
        };
        s.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        s.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("bad status line")?;
        let (mut len, mut close, mut id) = (0usize, false, None);
        loop {
            line.clear();
            if s.read_line(&mut line).await? == 0 {
                bail!("connection closed in headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => len = value.parse().context("bad content-length")?,
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "x-request-id" => id = Some(value.to_string()),
                _ => {}
            }
        }
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await?;
        if close {
            self.stream = None;
        }
        Ok(Reply {
            status,
            request_id: id,
            body: String::from_utf8_lossy(&buf).into_owned(),
        })
    }
}

/// A gauge's value from Prometheus exposition text.
pub fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_gauges() {
        let m = "# HELP x\nprocess_resident_memory_bytes 1234\ntriage_conversations 7\n";
        assert_eq!(
            super::gauge(m, "process_resident_memory_bytes"),
            Some(1234.0)
        );
        assert_eq!(super::gauge(m, "triage_conversations"), Some(7.0));
        assert_eq!(super::gauge(m, "triage_conv"), None);
    }
}
