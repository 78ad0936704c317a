//! A tiny webhook receiver for the walk-through and for trying whimp and whomp by hand.
//!
//! whimp needs a backend that answers 2xx and whomp needs a destination that does, and neither
//! `python3 -m http.server` (501 to POST) nor `nc` does that. This program answers every request
//! with a fixed status and prints what it got, so that an operator can see exactly what the
//! daemons forward (the `X-Forwarded-*`, `Whimp-*` and `webhook-*` header fields, the body byte
//! for byte). It uses the standard library only and serves one connection per thread: a demo,
//! not a server to put in front of anything.
//!
//! Like the daemons it prints `listening receiver <url>` and then `ready` on stdout, then one
//! block per request: `received <method> <target>`, the header fields indented, the body indented
//! under `body:`, and a blank line.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

const USAGE: &str = "demo-receiver: answers every HTTP request with a fixed status and prints it

usage:
  demo-receiver [--addr IP:PORT] [--status CODE]

  --addr IP:PORT   where to listen; default 127.0.0.1:8000 (port 0: any free port)
  --status CODE    the status of every answer, 200..=599; default 200
";

/// Refuses bodies larger than this, so a stray client cannot exhaust memory.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Refuses request heads larger than this.
const MAX_HEAD: usize = 64 * 1024;

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("demo-receiver: {message}\n\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let listener = match TcpListener::bind(&options.addr) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "demo-receiver: failed to listen on {}: {error}",
                options.addr
            );
            return ExitCode::from(69);
        }
    };
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(error) => {
            eprintln!("demo-receiver: failed to read the listening address: {error}");
            return ExitCode::from(74);
        }
    };
    let out = Arc::new(Mutex::new(io::stdout()));
    if let Ok(mut out) = out.lock() {
        // Flushed at once: the walk-through waits for these lines through a pipe.
        let _ = writeln!(out, "listening receiver http://{local}");
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // The answer goes out as it is written: with Nagle's algorithm, a client that delays its
        // ACKs holds each keep-alive request to 40 ms (about 350 requests a second in all).
        let _ = stream.set_nodelay(true);
        let out = Arc::clone(&out);
        let status = options.status;
        std::thread::spawn(move || {
            if let Err(error) = serve(stream, status, &out) {
                eprintln!("demo-receiver: connection ended: {error}");
            }
        });
    }
    ExitCode::SUCCESS
}

/// What the command line asked for.
struct Options {
    addr: String,
    status: u16,
}

impl Options {
    /// The options, or `None` when help was asked for.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut options = Options {
            addr: "127.0.0.1:8000".to_owned(),
            status: 200,
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--help" | "-h" => return Ok(None),
                "--addr" => options.addr = args.next().ok_or("--addr needs IP:PORT")?,
                "--status" => {
                    let value = args.next().ok_or("--status needs a code")?;
                    options.status = value
                        .parse()
                        .ok()
                        .filter(|code| (200..=599).contains(code))
                        .ok_or_else(|| format!("--status {value:?} is not a code in 200..=599"))?;
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Some(options))
    }
}

/// Serves the requests of one connection until the client closes it.
fn serve(stream: TcpStream, status: u16, out: &Mutex<io::Stdout>) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request) = read_request(&mut reader)? else {
            return Ok(());
        };
        if let Ok(mut out) = out.lock() {
            let _ = out.write_all(request.describe().as_bytes());
            let _ = out.flush();
        }
        let body = format!("{status}\n");
        write!(
            writer,
            "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            reason(status),
            body.len()
        )?;
        writer.flush()?;
        if request.close {
            return Ok(());
        }
    }
}

/// One request as received.
struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

impl Request {
    /// The block printed for this request.
    fn describe(&self) -> String {
        let mut text = format!("received {}\n", self.line);
        for (name, value) in &self.headers {
            text.push_str(&format!("  {name}: {value}\n"));
        }
        text.push_str(&format!("  body: {} bytes\n", self.body.len()));
        for line in String::from_utf8_lossy(&self.body).lines() {
            text.push_str(&format!("    {line}\n"));
        }
        text.push('\n');
        text
    }
}

/// Reads one HTTP/1.1 request (`Content-Length` or chunked body); `None` at a clean end.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut head_bytes = 0;
    let mut line = String::new();
    if read_line(reader, &mut line, &mut head_bytes)? == 0 {
        return Ok(None);
    }
    let request_line = line.trim_end().to_owned();
    let mut words = request_line.split(' ');
    let (method, version) = (words.next().unwrap_or_default(), words.nth(1));
    if method.is_empty() || version.is_none() {
        return Err(invalid(format!("malformed request line {request_line:?}")));
    }
    let mut headers = Vec::new();
    loop {
        line.clear();
        if read_line(reader, &mut line, &mut head_bytes)? == 0 {
            return Err(invalid("connection closed inside the request head"));
        }
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        let (name, value) = field
            .split_once(':')
            .ok_or_else(|| invalid(format!("malformed header field {field:?}")))?;
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.to_ascii_lowercase())
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let length = match header("content-length") {
            Some(value) => value
                .parse::<usize>()
                .map_err(|_| invalid(format!("content-length {value:?} is not a number")))?,
            None => 0,
        };
        if length > MAX_BODY {
            return Err(invalid(format!("body of {length} bytes is too large")));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    let close =
        header("connection").is_some_and(|v| v.contains("close")) || version == Some("HTTP/1.0");
    Ok(Some(Request {
        line: request_line,
        headers,
        body,
        close,
    }))
}

/// Reads a chunked body and its trailer section.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut read = 0;
    let mut line = String::new();
    loop {
        line.clear();
        read_line(reader, &mut line, &mut read)?;
        let size_text = line.trim_end().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text.trim(), 16)
            .map_err(|_| invalid(format!("chunk size {size_text:?} is not hexadecimal")))?;
        if size == 0 {
            break;
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("chunked body is too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        read_line(reader, &mut line, &mut read)?;
    }
    // The trailer section ends with an empty line.
    loop {
        line.clear();
        if read_line(reader, &mut line, &mut read)? == 0 || line.trim_end().is_empty() {
            return Ok(body);
        }
    }
}

/// Reads one line, refusing to let the head grow past [`MAX_HEAD`].
fn read_line(reader: &mut impl BufRead, line: &mut String, total: &mut usize) -> io::Result<usize> {
    let limit = (MAX_HEAD.saturating_sub(*total) + 1) as u64;
    let read = reader.take(limit).read_line(line)?;
    *total += read;
    if *total > MAX_HEAD {
        return Err(invalid("request head is too large"));
    }
    Ok(read)
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// A reason phrase for the common statuses; HTTP/1.1 clients ignore it anyway.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str) -> io::Result<Option<Request>> {
        read_request(&mut BufReader::new(raw.as_bytes()))
    }

    #[test]
    fn reads_a_content_length_body() {
        let request = check("POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(request.line, "POST /a HTTP/1.1");
        assert_eq!(request.body, b"hello");
        assert!(!request.close);
        assert!(request.describe().contains("  body: 5 bytes\n    hello\n"));
    }

    #[test]
    fn reads_a_chunked_body() {
        let raw = "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                   3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n";
        let request = check(raw).unwrap().unwrap();
        assert_eq!(request.body, b"hello");
        assert!(request.close);
    }

    #[test]
    fn a_clean_end_is_none() {
        assert!(check("").unwrap().is_none());
    }

    #[test]
    fn refuses_malformed_input() {
        let error = check("POST\r\n\r\n").err().unwrap();
        assert_eq!(error.to_string(), "malformed request line \"POST\"");
        let error = check("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n")
            .err()
            .unwrap();
        assert_eq!(error.to_string(), "content-length \"x\" is not a number");
        let error = check("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            .err()
            .unwrap();
        assert_eq!(error.to_string(), "chunk size \"zz\" is not hexadecimal");
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD));
        let error = check(&long).err().unwrap();
        assert_eq!(error.to_string(), "request head is too large");
    }

    #[test]
    fn options() {
        let parse = |args: &[&str]| Options::parse(args.iter().map(|a| (*a).to_owned()));
        let options = parse(&["--addr", "127.0.0.1:0", "--status", "410"])
            .unwrap()
            .unwrap();
        assert_eq!(
            (options.addr.as_str(), options.status),
            ("127.0.0.1:0", 410)
        );
        assert!(parse(&["--help"]).unwrap().is_none());
        assert_eq!(
            parse(&["--status", "99"]).err().unwrap(),
            "--status \"99\" is not a code in 200..=599"
        );
        assert_eq!(parse(&["--x"]).err().unwrap(), "unknown argument \"--x\"");
    }
}
