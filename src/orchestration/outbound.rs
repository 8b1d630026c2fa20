//! The HTTP clients callstream calls out with. Both speak TLS (rustls, with the platform's root
//! certificates) and never follow redirects: a 3xx is an answer, classified as a failure, so an
//! allowed host cannot bounce a request elsewhere.
//!
//! - `guarded` carries targets that come from requests (`webhook.post`). Its resolver drops
//!   loopback, private and link-local addresses unless the allowlist names the host literally, and
//!   the connection is made to an address that resolver returned — there is no second lookup for
//!   a rebinding DNS server to answer differently.
//! - `trusted` carries sinks an operator configured in the environment (message, billing and alert
//!   sinks), which may well be internal.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Once};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::outbound::{Allowlist, is_public};

/// A resolution refused because every address of the name was inward-facing.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` resolves only to loopback, private or link-local addresses")]
pub struct AddressForbidden(pub String);

struct GuardedResolver {
    /// Names the allowlist gives literally (`localhost`), which may resolve inward.
    literal_local: HashSet<String>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let inward_allowed = self.literal_local.contains(&host);
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let admitted: Vec<SocketAddr> =
                addresses.into_iter().filter(|a| inward_allowed || is_public(a.ip())).collect();
            if admitted.is_empty() {
                return Err(Box::new(AddressForbidden(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(admitted.into_iter()) as Addrs)
        })
    }
}

#[derive(Clone)]
pub struct Outbound {
    pub guarded: reqwest::Client,
    pub trusted: reqwest::Client,
}

/// rustls needs a process-wide crypto provider (ring) before any HTTP client is built; every
/// entry point calls this (the command line, `Application::build`), and so do tests.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    // Another part of the process may have installed one first; either serves.
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none())
}

impl Outbound {
    pub fn new(allowlist: &Allowlist) -> Result<Outbound, reqwest::Error> {
        let resolver = GuardedResolver { literal_local: allowlist.literal_local_hosts().into_iter().collect() };
        Ok(Outbound { guarded: builder().dns_resolver(Arc::new(resolver)).build()?, trusted: builder().build()? })
    }
}

/// Whether a request failed because the guarded resolver refused the target's addresses.
pub fn is_address_forbidden(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if cause.is::<AddressForbidden>() {
            return true;
        }
        source = cause.source();
    }
    false
}
