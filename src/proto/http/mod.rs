//! HTTP/1.x request heads (RFC 9112 §3): the method, the Host header, the first bytes of
//! the request target and Content-Length, read from the first bytes a client sends.
//!
//! Zero-copy and bounded: the parser looks at most [`MAX_HEAD`] bytes, returns views into
//! them and allocates nothing. It answers "not HTTP" from the first few bytes (a method
//! token of capital letters followed by a space), so a non-HTTP flow costs a comparison or
//! two.

/// Most bytes of a request head we look at. The head is usually well under 1 KiB; what a
/// longer one has past here (a Host header after 4 KiB of cookies) is not worth keeping
/// bytes per flow for.
pub const MAX_HEAD: usize = 4096;

/// Longest method token accepted (`PROPPATCH`, `MKCALENDAR` and the like fit).
pub const MAX_METHOD: usize = 16;

/// Bytes of the request target kept.
pub const URI_KEEP: usize = 64;

/// What a client's first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head<'a> {
    /// Not an HTTP/1.x request.
    NotHttp,
    /// A request line has begun but the head is not complete: wait for more bytes.
    NeedMore,
    /// A request head.
    Request(Request<'a>),
}

/// A parsed request head: views into the bytes given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method token.
    pub method: &'a [u8],
    /// The first [`URI_KEEP`] bytes of the request target.
    pub uri: &'a [u8],
    /// The value of the first Host header, trimmed; `None` without one (HTTP/0.9, 1.0).
    pub host: Option<&'a [u8]>,
    /// Content-Length, when present and a valid number.
    pub content_length: Option<u64>,
    /// The head was complete (blank line seen); false when [`MAX_HEAD`] bytes ran out first
    /// or the caller stopped waiting.
    pub complete: bool,
}

/// Parses the request head at the start of `b`. With `final_` (no more bytes will be
/// offered), an incomplete head is returned as far as it goes instead of `NeedMore`.
pub fn parse_request(b: &[u8], final_: bool) -> Head<'_> {
    let b = b.get(..MAX_HEAD).unwrap_or(b);
    // The method: 1..=16 capital letters (RFC 9110 methods are tokens; every registered one
    // is upper case), then a space.
    let mlen = b
        .iter()
        .take(MAX_METHOD + 1)
        .position(|c| !c.is_ascii_uppercase())
        .unwrap_or(b.len().min(MAX_METHOD + 1));
    if mlen > MAX_METHOD || (mlen < b.len() && b.get(mlen) != Some(&b' ')) {
        return Head::NotHttp;
    }
    if mlen == 0 {
        return if b.is_empty() {
            Head::NeedMore
        } else {
            Head::NotHttp
        };
    }
    let Some(line_end) = find(b, b'\n') else {
        if b.len() >= MAX_HEAD || final_ {
            return match request_line(b, b.len(), mlen) {
                Some((r, true)) => Head::Request(r),
                _ => Head::NotHttp,
            };
        }
        return Head::NeedMore;
    };
    let Some((mut req, versioned)) = request_line(b, line_end, mlen) else {
        return Head::NotHttp;
    };
    if !versioned {
        // HTTP/0.9 (RFC 1945 §4.1): `GET target`, no version, no headers. Any other
        // method without a version is another protocol's command (SMTP's `EHLO x`).
        if req.method != b"GET" {
            return Head::NotHttp;
        }
        req.complete = true;
        return Head::Request(req);
    }
    let mut rest = b.get(line_end + 1..).unwrap_or(&[]);
    loop {
        let Some(end) = find(rest, b'\n') else {
            if rest.len() + line_end + 1 >= MAX_HEAD || final_ {
                return Head::Request(req);
            }
            return Head::NeedMore;
        };
        let line = rest.get(..end).unwrap_or(&[]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        rest = rest.get(end + 1..).unwrap_or(&[]);
        if line.is_empty() {
            req.complete = true;
            return Head::Request(req);
        }
        let Some(colon) = find(line, b':') else {
            continue;
        };
        let (name, value) = (
            line.get(..colon).unwrap_or(&[]),
            trim(line.get(colon + 1..).unwrap_or(&[])),
        );
        if name.eq_ignore_ascii_case(b"host") && req.host.is_none() {
            req.host = (!value.is_empty()).then_some(value);
        } else if name.eq_ignore_ascii_case(b"content-length") && req.content_length.is_none() {
            req.content_length = number(value);
        }
    }
}

/// The request line `METHOD SP target [SP version]` up to `end` (its `\n`), and whether it
/// has the version.
fn request_line(b: &[u8], end: usize, mlen: usize) -> Option<(Request<'_>, bool)> {
    let line = b.get(..end)?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let method = line.get(..mlen)?;
    let after = line.get(mlen + 1..)?;
    let target_len = find(after, b' ').unwrap_or(after.len());
    let target = after.get(..target_len)?;
    if target.is_empty() {
        return None;
    }
    // The version is the line's last word; clients that put a space in the target
    // (`CONNECT host:25 / HTTP/1.0`, seen in Zeek's http-connect trace) still send one.
    let version = after
        .get(target_len + 1..)
        .map(|v| v.rsplit(|&c| c == b' ').next().unwrap_or(v));
    if version.is_some_and(|v| !v.starts_with(b"HTTP/")) {
        return None;
    }
    Some((
        Request {
            method,
            uri: target.get(..URI_KEEP).unwrap_or(target),
            host: None,
            content_length: None,
            complete: false,
        },
        version.is_some(),
    ))
}

fn find(b: &[u8], c: u8) -> Option<usize> {
    b.iter().position(|&x| x == c)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(b.len());
    let b = b.get(start..).unwrap_or(&[]);
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(0, |e| e + 1);
    b.get(..end).unwrap_or(&[])
}

/// A decimal Content-Length (RFC 9110 §8.6: digits only); `None` on anything else or
/// overflow.
fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests;
