//! Sessions whose client opens with a real application message, for the name taps: a TLS
//! ClientHello (whole, or split over several TCP segments) or an HTTP/1.x request head,
//! followed by the session's upload and download bytes.

use std::net::SocketAddr;

use super::TcpSession;
use crate::proto::tls::build::{client_hello, records, HelloSpec};

/// Largest TLS record fragment (RFC 8446 §5.1): a hello fits one record.
const MAX_FRAGMENT: usize = 16_384;

/// A TLS connection: the client's first bytes are the ClientHello of `hello` in one
/// handshake record, cut into `segments` TCP segments of equal size (1: whole; the last may
/// be shorter), then the rest of `upload` and the server's `download`.
pub fn tls_session(
    client: SocketAddr,
    server: SocketAddr,
    hello: &HelloSpec<'_>,
    segments: u16,
    upload: u64,
    download: u64,
) -> TcpSession {
    let bytes = records(&client_hello(hello), MAX_FRAGMENT);
    let mut s = TcpSession::new(client, server, upload, download);
    s.first_mss =
        u16::try_from(bytes.len().div_ceil(usize::from(segments.max(1)))).unwrap_or(u16::MAX);
    s.first_client_bytes = bytes;
    s
}

/// An HTTP/1.1 upload: a request head `METHOD uri` with `Host: host` and a Content-Length
/// of the body, then `body` bytes (upload = head + body), and the server's `download`.
pub fn http_upload(
    client: SocketAddr,
    server: SocketAddr,
    method: &str,
    host: &str,
    uri: &str,
    body: u64,
    download: u64,
) -> TcpSession {
    let head = format!(
        "{method} {uri} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: outflow-gen\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {body}\r\n\r\n"
    )
    .into_bytes();
    let mut s = TcpSession::new(client, server, head.len() as u64 + body, download);
    s.first_client_bytes = head;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tls::build::example_spec;
    use crate::proto::tls::{hello_from_stream, MAX_HANDSHAKE};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The client's payloads in order (seq order is send order here).
    fn client_payloads(s: &TcpSession) -> Vec<Vec<u8>> {
        s.segments()
            .zip(s.packets())
            .filter(|(g, _)| g.from_client && g.payload_len > 0)
            .map(|(g, p)| p.frame[p.frame.len() - g.payload_len as usize..].to_vec())
            .collect()
    }

    #[test]
    fn hello_whole_and_split_reassembles_to_the_hello() {
        for segs in [1u16, 2, 3] {
            let s = tls_session(
                sa("10.0.0.5:40000"),
                sa("162.125.6.20:443"),
                &example_spec(b"content.dropboxapi.com"),
                segs,
                10_000,
                2_000,
            );
            let head = s.first_client_bytes.clone();
            let p = client_payloads(&s);
            let n = usize::from(segs);
            let joined: Vec<u8> = p[..n].concat();
            assert_eq!(joined, head, "{segs} segments");
            assert!(p[n..].iter().all(|b| b.len() <= 1460));
            assert_eq!(p.iter().map(Vec::len).sum::<usize>(), 10_000);
            let mut scratch = vec![0; MAX_HANDSHAKE];
            let h = hello_from_stream(&joined, &mut scratch).unwrap();
            assert_eq!(h.server_name, Some(&b"content.dropboxapi.com"[..]));
            if segs > 1 {
                assert!(hello_from_stream(&p[0], &mut scratch).is_err());
            }
            assert_eq!(s.expected().orig_payload_bytes, 10_000);
        }
    }

    #[test]
    fn http_upload_counts_head_and_body() {
        let s = http_upload(
            sa("10.0.0.5:40001"),
            sa("198.51.100.9:80"),
            "PUT",
            "files.example.net",
            "/upload/report.bin",
            5_000,
            300,
        );
        let p = client_payloads(&s);
        assert!(p[0].starts_with(b"PUT /upload/report.bin HTTP/1.1\r\nHost: files.example.net"));
        assert!(p[0].ends_with(b"Content-Length: 5000\r\n\r\n"));
        assert_eq!(
            s.expected().orig_payload_bytes,
            s.first_client_bytes.len() as u64 + 5_000
        );
    }
}
