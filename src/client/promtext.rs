//! Reading the server's own `/metrics` page (OpenMetrics text, as
//! prometheus-client writes it) and estimating latency quantiles from its
//! histograms the way Prometheus's `histogram_quantile` does.
//!
//! whorl reads only its own exposition, so this reader handles what that
//! holds (samples with quoted, escaped labels; `#` lines skipped) rather
//! than the whole format; it never fails on a line it does not understand,
//! it skips it. Fetching is one HTTP/1.1 GET through hyper.

use super::ClientError;
use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name with its suffix (`_total`, `_bucket`, ...).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// A label's value, or "".
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map_or("", String::as_str)
    }
}

/// Every sample of an exposition; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(|l| parse_line(l.trim())).collect()
}

fn parse_line(l: &str) -> Option<Sample> {
    if l.is_empty() || l.starts_with('#') {
        return None;
    }
    let name_end = l.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = l[..name_end].to_string();
    let mut rest = &l[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(r)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

/// `a="x",b="y"}` → labels and what follows the closing brace.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut out = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(r) = s.strip_prefix('}') {
            return Some((out, r));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.insert(key, value);
        s = &s[end + 1..];
    }
}

/// A cumulative histogram: (upper bound, count at or below it), ascending,
/// the last bound `+Inf`.
pub type Buckets = Vec<(f64, f64)>;

/// The `_bucket` series of histogram `name` whose labels include `select`,
/// summed over the other labels.
pub fn buckets(samples: &[Sample], name: &str, select: &[(&str, &str)]) -> Buckets {
    let want = format!("{name}_bucket");
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == want && select.iter().all(|(k, v)| s.label(k) == *v)) {
        let le = match s.label("le") {
            "+Inf" => f64::INFINITY,
            v => match v.parse::<f64>() {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
        e.1 += s.value;
    }
    let mut v: Buckets = by_le.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// `b - a` bucket by bucket (the histogram of what happened between two
/// scrapes); bounds missing from `a` count as zero there.
pub fn minus(b: &Buckets, a: &Buckets) -> Buckets {
    b.iter()
        .map(|&(le, n)| {
            let before = a.iter().find(|x| x.0 == le).map_or(0.0, |x| x.1);
            (le, (n - before).max(0.0))
        })
        .collect()
}

/// Observations in a histogram.
pub fn total(b: &Buckets) -> f64 {
    b.last().map_or(0.0, |x| x.1)
}

/// The `q` quantile, interpolated linearly inside its bucket (as
/// Prometheus's `histogram_quantile`); `None` without observations. An
/// answer in the `+Inf` bucket is the largest finite bound (a floor).
pub fn quantile(b: &Buckets, q: f64) -> Option<f64> {
    let n = total(b);
    if n <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * n;
    let mut prev = (0.0, 0.0);
    for &(le, c) in b {
        if c >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let inside = c - prev.1;
            let frac = if inside > 0.0 { (rank - prev.1) / inside } else { 1.0 };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, c);
    }
    Some(prev.0)
}

/// Fetches `http://host:port/metrics` (`addr` may carry the scheme and
/// path or not).
pub async fn fetch(addr: &str) -> Result<String, ClientError> {
    use http_body_util::BodyExt;
    let url = metrics_url(addr);
    let fail = |reason: String| ClientError::Metrics { url: url.clone(), reason };
    let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("{e}")))?;
    let host = uri.authority().map(|a| a.to_string()).ok_or_else(|| fail("no host".into()))?;
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(&host))
        .await
        .map_err(|_| fail("timed out connecting".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(uri.path())
        .header(hyper::header::HOST, host.as_str())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| fail(e.to_string()))?;
    let reply = async {
        let resp = send.send_request(req).await.map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let body = resp.into_body().collect().await.map_err(|e| fail(e.to_string()))?.to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| fail("not UTF-8 text".into()))
    };
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), reply)
        .await
        .map_err(|_| fail("timed out waiting for the page".into()))?;
    driver.abort();
    r
}

/// `host:port` → `http://host:port/metrics`.
pub fn metrics_url(addr: &str) -> String {
    let a = addr.trim().trim_end_matches('/');
    let a = if a.contains("://") { a.to_string() } else { format!("http://{a}") };
    if a.ends_with("/metrics") { a } else { format!("{a}/metrics") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP whorl_requests gRPC requests by method and status code.
# TYPE whorl_requests counter
whorl_requests_total{method="Identify",code="OK"} 90
whorl_requests_total{method="Identify",code="INVALID_ARGUMENT"} 2
whorl_requests_total{method="Enroll",code="OK"} 5
whorl_in_flight 3
whorl_backend{backend="cpu (avx2, \"x\")"} 1
whorl_request_duration_seconds_bucket{le="0.001",method="Identify"} 10
whorl_request_duration_seconds_bucket{le="0.002",method="Identify"} 50
whorl_request_duration_seconds_bucket{le="0.004",method="Identify"} 90
whorl_request_duration_seconds_bucket{le="+Inf",method="Identify"} 92
garbage line {
# EOF
"#;

    #[test]
    fn reads_samples_labels_and_escapes() {
        let s = parse(PAGE);
        assert_eq!(s.len(), 9, "{s:?}");
        assert_eq!(s[1].label("code"), "INVALID_ARGUMENT");
        assert_eq!(s[1].value, 2.0);
        assert_eq!(s[4].label("backend"), "cpu (avx2, \"x\")");
        assert_eq!(s[3].name, "whorl_in_flight");
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let s = parse(PAGE);
        let b = buckets(&s, "whorl_request_duration_seconds", &[("method", "Identify")]);
        assert_eq!(b.len(), 4);
        assert_eq!(total(&b), 92.0);
        // rank 46 lies in (0.001, 0.002]: 36 of its 40.
        let p50 = quantile(&b, 0.5).unwrap();
        assert!((p50 - (0.001 + 0.001 * 36.0 / 40.0)).abs() < 1e-12, "{p50}");
        // The top 2 are past the last finite bound: the answer is that bound.
        assert_eq!(quantile(&b, 1.0), Some(0.004));
        assert_eq!(quantile(&minus(&b, &b), 0.5), None);
        let none = buckets(&s, "whorl_request_duration_seconds", &[("method", "Verify")]);
        assert_eq!(quantile(&none, 0.5), None);
    }

    #[test]
    fn urls_from_addresses() {
        assert_eq!(metrics_url("127.0.0.1:9108"), "http://127.0.0.1:9108/metrics");
        assert_eq!(metrics_url("http://h:1/metrics"), "http://h:1/metrics");
    }
}
