//! `ndots report`: fetch the amplification report of running proxies (`--from`, repeatable,
//! merged) or read saved ones (`--input`), and render it (DESIGN §2, §4).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use super::{CliError, Format};
use crate::amplify::Report;
use crate::render;

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// A report is a few hundred KiB at most (top lists are capped); refuse anything absurd.
const MAX_BODY: usize = 64 << 20;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ndots report --from http://127.0.0.1:9255\n  \
                  ndots report --from http://10.0.0.5:9255 --from http://10.0.0.6:9255 --window 1h\n  \
                  ndots report --from http://127.0.0.1:9255 --format html -o report.html
  \
                  ndots report --prometheus http://prometheus:9090 --selector 'job=\"ndots\"' --window 1h"
)]
pub struct ReportArgs {
    /// A proxy's admin address, e.g. http://10.0.0.5:9255 (repeatable: the reports are merged).
    #[arg(long, value_name = "URL")]
    pub from: Vec<String>,
    /// A saved report JSON (repeatable: merged with each other and with --from).
    #[arg(long, value_name = "FILE")]
    pub input: Vec<PathBuf>,
    /// Build the fleet report from the proxies' and collectors' metrics in this Prometheus
    /// (http://HOST:PORT): summed over every matching instance, with per-namespace figures.
    #[arg(long, value_name = "URL", conflicts_with_all = ["from", "input"])]
    pub prometheus: Option<String>,
    /// With --prometheus: a label matcher list for the series, e.g. `job="ndots"`.
    #[arg(long, value_name = "SELECTOR", requires = "prometheus")]
    pub selector: Option<String>,
    /// Report over the last WINDOW (e.g. 5m, 1h) instead of since the proxy started.
    #[arg(long, value_name = "WINDOW")]
    pub window: Option<String>,
    /// Output format: text (default; for a person), json (the report object) or html (one
    /// self-contained file with charts).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> Result<(), CliError> {
    if let Some(url) = &args.prometheus {
        let report = fleet(url, &args)?;
        return write_out(&args, &report);
    }
    if args.from.is_empty() && args.input.is_empty() {
        return Err(CliError::usage(anyhow!(
            "nothing to report: give --from http://HOST:PORT (a proxy's admin address), \
             --input FILE (a saved report) or --prometheus http://HOST:PORT"
        )));
    }
    let window = match &args.window {
        Some(w) => {
            let d = crate::config::parse_duration(w).map_err(CliError::usage)?;
            if args.from.is_empty() {
                return Err(CliError::usage(anyhow!(
                    "--window applies to --from (a saved report already covers a fixed window)"
                )));
            }
            if d.is_zero() {
                return Err(CliError::usage(anyhow!("--window must be longer than 0")));
            }
            Some(w.trim().to_string())
        }
        None => None,
    };
    // The same proxy named twice would count twice: each source once.
    let mut from: Vec<String> = Vec::new();
    for u in &args.from {
        let u = u.trim_end_matches('/').to_string();
        if !from.contains(&u) {
            from.push(u);
        }
    }
    let mut inputs: Vec<&PathBuf> = Vec::new();
    for p in &args.input {
        if !inputs.iter().any(|q| q == &p) {
            inputs.push(p);
        }
    }
    let targets = from
        .iter()
        .map(|u| parse_url(u).map_err(CliError::usage))
        .collect::<Result<Vec<_>, _>>()?;

    let mut reports = Vec::new();
    for path in inputs {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(CliError::runtime)?;
        let r: Report = serde_json::from_str(&text)
            .with_context(|| {
                format!(
                    "{} is not an ndots report (save one with `ndots report --format json` \
                     or `curl http://HOST:PORT/report`)",
                    path.display()
                )
            })
            .map_err(CliError::runtime)?;
        reports.push(r);
    }
    for (url, t) in from.iter().zip(&targets) {
        let mut path = t.path.clone();
        if let Some(w) = &window {
            path.push_str(if path.contains('?') { "&" } else { "?" });
            path.push_str("window=");
            path.push_str(w);
        }
        let body = http_get(&t.host, t.port, &path).with_context(|| {
            format!("fetching the report from {url} (is the proxy running with its admin listener there?)")
        })?;
        let r: Report = serde_json::from_str(&body)
            .with_context(|| format!("{url}{path} did not return an ndots report"))?;
        reports.push(r);
    }

    let report = if reports.len() == 1 {
        reports.pop().expect("one report")
    } else {
        Report::merge(&reports)
    };
    write_out(&args, &report)
}

/// `--prometheus`: one instant query per figure (crate::fleet).
fn fleet(url: &str, args: &ReportArgs) -> Result<Report, CliError> {
    let t = parse_url(url).map_err(CliError::usage)?;
    let window = match &args.window {
        Some(w) => {
            let d = crate::config::parse_duration(w).map_err(CliError::usage)?;
            if d.is_zero() {
                return Err(CliError::usage(anyhow!("--window must be longer than 0")));
            }
            // PromQL durations: whole seconds are always valid.
            Some((format!("{}s", d.as_secs().max(1)), d.as_secs_f64()))
        }
        None => None,
    };
    let base = if t.path == "/report" {
        ""
    } else {
        t.path.trim_end_matches('/')
    };
    let mut query = |q: &str| -> anyhow::Result<Vec<crate::fleet::Sample>> {
        let path = format!("{base}/api/v1/query?query={}", percent_encode(q));
        let body = http_get(&t.host, t.port, &path)
            .with_context(|| format!("asking Prometheus at {url}"))?;
        crate::fleet::parse_vector(&body)
    };
    let window_ref = window.as_ref().map(|(w, s)| (w.as_str(), *s));
    crate::fleet::report(
        &mut query,
        args.selector.as_deref(),
        window_ref,
        &format!("prometheus {url}"),
    )
    .map_err(CliError::runtime)
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn write_out(args: &ReportArgs, report: &Report) -> Result<(), CliError> {
    let report = report.clone();
    let out = match args.format.unwrap_or(Format::Text) {
        Format::Text => render::text(&report),
        Format::Json => render::json(&report),
        Format::Html => render::html(&report),
    };
    match &args.output {
        Some(p) => std::fs::write(p, out)
            .with_context(|| format!("writing {}", p.display()))
            .map_err(CliError::runtime),
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(out.as_bytes()) {
                // A closed pipe (`| head`) is not a failure.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(CliError::runtime(anyhow!(e)))
                }
                _ => Ok(()),
            }
        }
    }
}

#[derive(Debug, PartialEq)]
struct Target {
    host: String,
    port: u16,
    /// Path and query; `/report` when the URL has no path.
    path: String,
}

/// `http://HOST:PORT[/path]` or a bare `HOST:PORT`.
fn parse_url(url: &str) -> anyhow::Result<Target> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => bail!("{url:?}: only http:// is supported, not {scheme}://"),
        None => url,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>()
                .map_err(|_| anyhow!("{url:?}: bad port {p:?}"))?,
        ),
        _ => bail!("{url:?}: expected http://HOST:PORT, e.g. http://127.0.0.1:9255"),
    };
    let path = if path.is_empty() || path == "/" {
        "/report".to_string()
    } else {
        path.to_string()
    };
    Ok(Target {
        host: host.to_string(),
        port,
        path,
    })
}

/// One blocking HTTP/1.1 GET with `Connection: close`; the body of a 200 answer.
fn http_get(host: &str, port: u16, path: &str) -> anyhow::Result<String> {
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} has no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAccept: application/json\r\n\
         User-Agent: ndots/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )?;
    let mut buf = Vec::new();
    s.take(MAX_BODY as u64 + 65536)
        .read_to_end(&mut buf)
        .context("reading the answer")?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP answer"))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let mut body = buf[split + 4..].to_vec();
    let status = head.lines().next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.truncate(len);
    }
    let text = String::from_utf8(body).context("the answer is not UTF-8")?;
    if code != "200" {
        bail!("{status}: {}", text.trim());
    }
    Ok(text)
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunked encoding"))?;
        let size_text = std::str::from_utf8(&b[..eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://10.0.0.5:9255").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("10.0.0.5", 9255, "/report")
        );
        let t = parse_url("127.0.0.1:1/custom/report").unwrap();
        assert_eq!(t.path, "/custom/report");
        let t = parse_url("http://[::1]:9255/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9255));
        assert!(parse_url("https://x:1").is_err());
        assert!(parse_url("http://nohost").is_err());
        assert!(parse_url("http://h:99999").is_err());
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"9\r\nabc").is_err());
    }
}
