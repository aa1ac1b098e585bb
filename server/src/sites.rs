//! Which events ingest lets in, by the registered sites: a site with `domains` takes
//! browser events only from those hosts and their subdomains, and with `STRICT_SITES`
//! only registered sites take events at all.
//!
//! A browser event is one whose request has an `Origin` or a `Referer`; server-side
//! senders send neither, and are let in. The registry is read from the store every few
//! seconds (and at once after a change made through this process), so that ingest never
//! waits on the store for it. Refusals are counted, for `/health`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use beacon_store::{Site, Store};
use tokio::sync::Notify;

/// How often the registry is read again.
const REFRESH: Duration = Duration::from_secs(2);

/// Why an event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Sent from a page on a host the site does not list.
    Origin,
    /// For a site that is not registered, with `STRICT_SITES`.
    Unregistered,
}

impl Refused {
    /// What to tell the sender.
    pub fn reason(self, site_id: &str) -> String {
        match self {
            Self::Origin => format!("site `{site_id}` does not take events from this host"),
            Self::Unregistered => format!("site `{site_id}` is not registered"),
        }
    }
}

/// The registered sites, as last read, and the refusal counts.
#[derive(Debug)]
pub struct Sites {
    known: RwLock<HashMap<String, Site>>,
    strict: bool,
    changed: Notify,
    refused_origin: AtomicU64,
    refused_unregistered: AtomicU64,
}

impl Sites {
    /// Starts reading `store`'s sites, for as long as the returned handle lives.
    pub fn start(store: Store, strict: bool) -> Arc<Self> {
        let sites = Arc::new(Self {
            known: RwLock::default(),
            strict,
            changed: Notify::new(),
            refused_origin: AtomicU64::new(0),
            refused_unregistered: AtomicU64::new(0),
        });
        tokio::spawn(refresh(store, Arc::downgrade(&sites)));
        sites
    }

    /// Reads the registry again now: a site was changed through this process.
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    /// The host a request's page is on, if it comes from a browser page.
    pub fn page_host(headers: &HeaderMap) -> Option<String> {
        let url = headers
            .get(header::ORIGIN)
            .or_else(|| headers.get(header::REFERER))?
            .to_str()
            .ok()?;
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority = rest.split(['/', '?', '#']).next()?;
        let host = authority.rsplit('@').next()?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next()?,
            None => host.split(':').next()?,
        };
        Some(host.trim_end_matches('.').to_ascii_lowercase())
    }

    /// `Err` if an event for `site_id` from `page_host` must be refused; counts it.
    pub fn check(&self, site_id: &str, page_host: Option<&str>) -> Result<(), Refused> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        let refused = match known.get(site_id) {
            None if self.strict => Some(Refused::Unregistered),
            None => None,
            Some(site) => page_host
                .filter(|host| !site.domains.is_empty() && !allowed(&site.domains, host))
                .map(|_| Refused::Origin),
        };
        match refused {
            None => Ok(()),
            Some(why) => {
                let counter = match why {
                    Refused::Origin => &self.refused_origin,
                    Refused::Unregistered => &self.refused_unregistered,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Err(why)
            }
        }
    }

    /// The time zone `site_id` is registered with, if it is registered.
    pub fn timezone(&self, site_id: &str) -> Option<String> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        known.get(site_id).map(|s| s.timezone.clone())
    }

    /// Events refused so far: from other hosts, and for unregistered sites.
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_origin.load(Ordering::Relaxed),
            self.refused_unregistered.load(Ordering::Relaxed),
        )
    }
}

/// Whether `host` is one of `domains` or a subdomain of one.
fn allowed(domains: &[String], host: &str) -> bool {
    domains.iter().any(|d| {
        host == d
            || host
                .strip_suffix(d.as_str())
                .is_some_and(|prefix| prefix.ends_with('.'))
    })
}

async fn refresh(store: Store, sites: Weak<Sites>) {
    loop {
        let Some(strong) = sites.upgrade() else {
            return; // the server is gone
        };
        match store.sites().await {
            Ok(list) => {
                let map = list.into_iter().map(|s| (s.site_id.clone(), s)).collect();
                *strong.known.write().unwrap_or_else(|p| p.into_inner()) = map;
            }
            // While the store is unreachable, ingest fails on its own; keep the last.
            Err(e) => tracing::debug!(error = %e, "cannot read the registered sites"),
        }
        let changed = async { strong.changed.notified().await };
        let _ = tokio::time::timeout(REFRESH, changed).await;
        drop(strong);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_subdomains_are_allowed_and_lookalikes_not() {
        let domains = vec!["example.com".to_owned()];
        assert!(allowed(&domains, "example.com"));
        assert!(allowed(&domains, "www.example.com"));
        assert!(!allowed(&domains, "badexample.com"));
        assert!(!allowed(&domains, "example.com.evil.net"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::REFERER,
            "https://user@WWW.Example.com:8443/a?b".parse().unwrap(),
        );
        assert_eq!(
            Sites::page_host(&headers).as_deref(),
            Some("www.example.com")
        );
        headers.insert(header::ORIGIN, "http://[::1]:3000".parse().unwrap());
        assert_eq!(Sites::page_host(&headers).as_deref(), Some("::1"));
    }
}
