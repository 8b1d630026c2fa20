//! Outbound targets that come from requests (`webhook.post`'s `url`): parsed with a WHATWG URL
//! parser — the same rules the HTTP client applies — and admitted only when scheme, host and port
//! match an allowlist entry. Hand-written host extraction disagreed with the client on forms such
//! as `http://evil.example\@127.0.0.1/`; here there is one parse, and the client is handed its
//! result.
//!
//! Allowlist entries (policy `allowedHosts`):
//! - `host` — `http` and `https` on their default ports;
//! - `host:port` — `http` and `https` on that port;
//! - `scheme://host`, `scheme://host:port` — exactly that origin;
//! - `scheme://host:*` — any port of that scheme and host.
//!
//! Loopback, private and link-local addresses are reached only through hosts that name them
//! literally (an IP literal, or `localhost`): a DNS name that resolves there is refused when it is
//! resolved (`TARGET_ADDRESS_FORBIDDEN`), so DNS rebinding cannot turn an allowed name inward.

use std::net::IpAddr;

use url::{Host, Url};

use super::error::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Port {
    /// The scheme's default port.
    Default,
    Exact(u16),
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// `None`: both `http` and `https`.
    scheme: Option<String>,
    host: Host<String>,
    port: Port,
}

/// The parsed allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<Entry>,
}

/// A target that passed the allowlist: the URL exactly as the client will use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: Url,
}

fn is_web_scheme(scheme: &str) -> bool {
    scheme == "http" || scheme == "https"
}

/// A refusal with the catalog code it is reported under.
pub type Refusal = (ErrorCode, String);

impl Allowlist {
    pub fn parse(entries: &[String]) -> Result<Allowlist, String> {
        let entries = entries.iter().map(|entry| parse_entry(entry)).collect::<Result<_, _>>()?;
        Ok(Allowlist { entries })
    }

    /// Hosts that may resolve to loopback, private or link-local addresses because the allowlist
    /// names them literally (`localhost`; IP literals never reach a resolver).
    pub fn literal_local_hosts(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|e| match &e.host {
                Host::Domain(name) if name == "localhost" => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// Parse `raw` and admit it if an entry matches its scheme, host and port.
    pub fn admit(&self, raw: &str) -> Result<Target, Refusal> {
        let url = Url::parse(raw).map_err(|e| (ErrorCode::ParamsInvalid, format!("`url` is not a URL: {e}")))?;
        if !is_web_scheme(url.scheme()) {
            return Err((ErrorCode::ParamsInvalid, "`url` must be an http:// or https:// URL".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err((ErrorCode::ParamsInvalid, "`url` must not carry credentials".into()));
        }
        let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
            return Err((ErrorCode::ParamsInvalid, "`url` has no host".into()));
        };
        let host = host.to_owned();
        let admitted = self.entries.iter().any(|entry| {
            entry.scheme.as_deref().is_none_or(|s| s == url.scheme())
                && entry.host == host
                && match entry.port {
                    Port::Any => true,
                    Port::Exact(p) => p == port,
                    Port::Default => Some(port) == default_port(url.scheme()),
                }
        });
        if !admitted {
            return Err((
                ErrorCode::HostNotAllowed,
                format!("`{}://{host}:{port}` is not an allowed outbound target", url.scheme()),
            ));
        }
        Ok(Target { url })
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn parse_entry(entry: &str) -> Result<Entry, String> {
    let invalid = |why: &str| format!("allowlist entry `{entry}` {why}");
    let (scheme, rest) = match entry.split_once("://") {
        Some((scheme, rest)) if is_web_scheme(scheme) => (Some(scheme.to_owned()), rest),
        Some(_) => return Err(invalid("must use http or https")),
        None => (None, entry),
    };
    if rest.contains(['/', '?', '#', '@', '\\']) {
        return Err(invalid("must be a host with an optional port, nothing else"));
    }
    let (authority, any_port) = match rest.strip_suffix(":*") {
        Some(host) => (host, true),
        None => (rest, false),
    };
    let url = Url::parse(&format!("{}://{authority}", scheme.as_deref().unwrap_or("http")))
        .map_err(|e| invalid(&format!("is not a host: {e}")))?;
    let host = url.host().ok_or_else(|| invalid("has no host"))?.to_owned();
    let port = match (any_port, url.port()) {
        (true, _) => Port::Any,
        (false, Some(port)) => Port::Exact(port),
        // `url` drops a port equal to the scheme's default; for a scheme-less entry that is
        // still "the default port of whichever scheme".
        (false, None) if authority.contains(':') && !authority.ends_with(']') => {
            Port::Exact(default_port(scheme.as_deref().unwrap_or("http")).unwrap_or(80))
        }
        (false, None) => Port::Default,
    };
    Ok(Entry { scheme, host, port })
}

/// Whether `ip` is on the public internet: not loopback, private, link-local, shared (CGNAT),
/// unspecified, broadcast, multicast, documentation, or an IPv6 form of one of those.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).expect("valid")
    }

    fn code(list: &Allowlist, url: &str) -> Option<ErrorCode> {
        list.admit(url).err().map(|(code, _)| code)
    }

    #[test]
    fn entries_match_scheme_host_and_port() {
        let allow =
            list(&["https://hooks.example.com", "http://127.0.0.1:8080", "http://localhost:*", "api.example.org"]);
        assert!(allow.admit("https://hooks.example.com/x").is_ok());
        assert!(allow.admit("https://HOOKS.example.com:443/x").is_ok(), "case and default port normalize");
        assert_eq!(code(&allow, "http://hooks.example.com/x"), Some(ErrorCode::HostNotAllowed), "other scheme");
        assert_eq!(code(&allow, "https://hooks.example.com:8443/x"), Some(ErrorCode::HostNotAllowed), "other port");
        assert!(allow.admit("http://127.0.0.1:8080/hook").is_ok());
        assert_eq!(code(&allow, "http://127.0.0.1:8081/hook"), Some(ErrorCode::HostNotAllowed));
        assert!(allow.admit("http://localhost:1234/").is_ok());
        assert_eq!(code(&allow, "https://localhost:1234/"), Some(ErrorCode::HostNotAllowed));
        assert!(allow.admit("http://api.example.org/").is_ok() && allow.admit("https://api.example.org/").is_ok());
        assert_eq!(code(&allow, "https://api.example.org:444/"), Some(ErrorCode::HostNotAllowed));
    }

    #[test]
    fn bypass_forms_are_read_as_the_client_reads_them() {
        let allow = list(&["http://127.0.0.1:8080"]);
        // WHATWG: `\` ends the authority of a special URL, so the host is evil.example.
        assert_eq!(code(&allow, "http://evil.example\\@127.0.0.1:8080/"), Some(ErrorCode::HostNotAllowed));
        assert_eq!(code(&allow, "http://127.0.0.1:8080@evil.example/"), Some(ErrorCode::ParamsInvalid));
        assert_eq!(code(&allow, "http://user:pw@127.0.0.1:8080/"), Some(ErrorCode::ParamsInvalid));
        // Percent-encoded dots and decimal IPs are the same host to the client, and so to us.
        assert!(allow.admit("http://127%2E0%2E0%2E1:8080/").is_ok());
        assert!(allow.admit("http://2130706433:8080/").is_ok());
        assert_eq!(code(&allow, "http://2130706434:8080/"), Some(ErrorCode::HostNotAllowed));
        assert_eq!(code(&allow, "http://[::1]:8080/"), Some(ErrorCode::HostNotAllowed), "another address family");
        assert_eq!(code(&allow, "http://localhost.:8080/"), Some(ErrorCode::HostNotAllowed), "a trailing dot");
        assert_eq!(code(&allow, "ftp://127.0.0.1:8080/"), Some(ErrorCode::ParamsInvalid));
        assert_eq!(code(&allow, "not a url"), Some(ErrorCode::ParamsInvalid));
    }

    #[test]
    fn bad_entries_are_refused() {
        for entry in ["ftp://x", "http://x/path", "a@b", "http://[::1", ""] {
            assert!(Allowlist::parse(&[entry.to_owned()]).is_err(), "{entry}");
        }
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["93.184.216.34", "2606:4700::1111", "1.1.1.1"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }
}
