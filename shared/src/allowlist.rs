//! Which result URLs gengate accepts from providers: https on an allowlisted host, and nothing that
//! could make gengate (or a client following the URL) fetch from somewhere else — no credentials in
//! the URL, no IP literals, no odd ports, no look-alike hosts such as `kie.ai.evil.com` or
//! `evilkie.ai`. Exact origins may be allowed on top, plain http included, for a local simulator.
//!
//! What is checked is what is stored: a URL is accepted only when its text is already in the
//! normal form a WHATWG URL parser gives it. Parsers disagree about backslashes, control
//! characters and percent-encoded hosts (`https://files.kie.ai\@evil.com/` is `files.kie.ai` to
//! one and `evil.com` to another), so a URL whose raw text differs from its normal form is refused
//! rather than stored in a form some client would read differently.

use url::{Host, Url};

use crate::config::WebhookSettings;

/// The configured allowlist.
#[derive(Debug, Clone)]
pub struct ResultAllowlist {
    /// Exact hosts and `*.`-suffix patterns, lower case, without trailing dots.
    hosts: Vec<String>,
    /// Exact origins (`scheme://host:port`), as `Url::origin().ascii_serialization()`.
    origins: Vec<String>,
}

/// Why a URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlRejection {
    /// Not a URL.
    #[error("not a valid URL")]
    Invalid,
    /// Not https.
    #[error("not https")]
    NotHttps,
    /// User name or password in the URL.
    #[error("carries credentials")]
    Credentials,
    /// An IP address instead of a host name.
    #[error("is an IP address")]
    IpLiteral,
    /// A port other than 443.
    #[error("uses a non-default port")]
    Port,
    /// A host not on the allowlist.
    #[error("host is not on the allowlist")]
    Host,
    /// The text is not the URL's normal form (backslashes, control characters, percent-encoded
    /// or upper-case hosts, default ports spelled out, …).
    #[error("is not in normal form")]
    NotNormal,
}

impl ResultAllowlist {
    /// The allowlist of `[webhook]`.
    pub fn from_settings(settings: &WebhookSettings) -> Self {
        let hosts = settings
            .allowed_result_hosts
            .iter()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let origins = settings
            .allowed_result_origins
            .iter()
            .filter_map(|o| Url::parse(o).ok())
            .map(|u| u.origin().ascii_serialization())
            .collect();
        Self { hosts, origins }
    }

    /// Checks one URL.
    pub fn check(&self, text: &str) -> Result<(), UrlRejection> {
        self.normalise(text).map(drop)
    }

    /// Checks one URL and returns the form to store and hand out (its normal form, which is also
    /// its text: anything else is refused).
    pub fn normalise(&self, text: &str) -> Result<String, UrlRejection> {
        let url = Url::parse(text).map_err(|_| UrlRejection::Invalid)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRejection::Credentials);
        }
        if url.as_str() != text {
            return Err(UrlRejection::NotNormal);
        }
        if self.origins.contains(&url.origin().ascii_serialization()) {
            return Ok(url.into());
        }
        if url.scheme() != "https" {
            return Err(UrlRejection::NotHttps);
        }
        let host = match url.host() {
            Some(Host::Domain(domain)) => domain.trim_end_matches('.').to_ascii_lowercase(),
            Some(Host::Ipv4(_) | Host::Ipv6(_)) => return Err(UrlRejection::IpLiteral),
            None => return Err(UrlRejection::Invalid),
        };
        // `Url` drops the default port, so any port left is a non-default one.
        if url.port().is_some() {
            return Err(UrlRejection::Port);
        }
        if self.hosts.iter().any(|pattern| host_matches(pattern, &host)) {
            Ok(url.into())
        } else {
            Err(UrlRejection::Host)
        }
    }

    /// Checks every URL; the first refused one and why.
    pub fn check_all<'a>(
        &self,
        urls: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), (String, UrlRejection)> {
        self.normalise_all(urls).map(drop)
    }

    /// Checks every URL and returns their forms to store, in order; the first refused one and why.
    pub fn normalise_all<'a>(
        &self,
        urls: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>, (String, UrlRejection)> {
        urls.into_iter()
            .map(|url| self.normalise(url).map_err(|why| (url.to_owned(), why)))
            .collect()
    }
}

/// `*.example.com` matches subdomains of example.com (at any depth), never example.com itself or
/// a host that merely ends in the same letters; anything else matches exactly.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host[..host.len() - suffix.len()].ends_with('.')
        }
        None => host == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowlist() -> ResultAllowlist {
        let settings = WebhookSettings {
            secret: None,
            secret_file: None,
            key_version: 1,
            previous_secrets: Default::default(),
            allowed_result_hosts: vec!["*.kie.ai".into(), "tempfile.aiquickdraw.com".into()],
            allowed_result_origins: vec!["http://127.0.0.1:8099".into()],
            max_body_bytes: 1024,
            signature_tolerance_secs: 300,
        };
        ResultAllowlist::from_settings(&settings)
    }

    #[test]
    fn allowlisted_https_hosts_pass() {
        let a = allowlist();
        for ok in [
            "https://files.kie.ai/v/1.mp4",
            "https://a.b.kie.ai/v/1.mp4",
            "https://tempfile.aiquickdraw.com/x.mp4?sig=1",
            "https://files.kie.ai./v/1.mp4",
            "https://files.kie.ai/v/a%20b.mp4",
            "http://127.0.0.1:8099/files/1.mp4",
        ] {
            assert_eq!(a.check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn tricks_are_refused() {
        let a = allowlist();
        for (bad, why) in [
            ("http://files.kie.ai/v.mp4", UrlRejection::NotHttps),
            ("https://kie.ai.evil.com/v.mp4", UrlRejection::Host),
            ("https://evilkie.ai/v.mp4", UrlRejection::Host),
            ("https://kie.ai/v.mp4", UrlRejection::Host),
            ("https://files.kie.ai@evil.com/v.mp4", UrlRejection::Credentials),
            ("https://user:pw@files.kie.ai/v.mp4", UrlRejection::Credentials),
            ("https://127.0.0.1/v.mp4", UrlRejection::IpLiteral),
            ("https://[::1]/v.mp4", UrlRejection::IpLiteral),
            ("https://2130706433/v.mp4", UrlRejection::NotNormal),
            ("https://files.kie.ai:8443/v.mp4", UrlRejection::Port),
            ("https://tempfile.aiquickdraw.com.evil.com/x", UrlRejection::Host),
            ("http://127.0.0.1:8098/files/1.mp4", UrlRejection::NotHttps),
            ("javascript:alert(1)", UrlRejection::NotHttps),
            ("not a url", UrlRejection::Invalid),
        ] {
            assert_eq!(a.check(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn only_urls_in_normal_form_pass_so_what_is_stored_is_what_was_checked() {
        let a = allowlist();
        for bad in [
            // Read as files.kie.ai by the WHATWG parser, as evil.com by others.
            "https://files.kie.ai\\@evil.com/x.mp4",
            "https://files.kie.ai\\x.mp4",
            "https://files.kie.ai/x.mp4\r\nSet-Cookie: a=b",
            "https://files.kie.ai/x\t.mp4",
            "https://files%2Ekie.ai/x.mp4",
            "https://FILES.KIE.AI/v/1.mp4",
            "https://tempfile.aiquickdraw.com:443/x.mp4",
            "https://files.kie.ai/a b.mp4",
            " https://files.kie.ai/x.mp4",
            "https://files.kie.ai",
        ] {
            assert_eq!(a.check(bad), Err(UrlRejection::NotNormal), "{bad:?}");
        }
        let good = "https://files.kie.ai/v/1.mp4?sig=a%2Fb";
        assert_eq!(a.normalise(good).as_deref(), Ok(good));
        assert_eq!(
            a.normalise_all(["https://files.kie.ai/1.mp4", "https://evilkie.ai/x"]),
            Err(("https://evilkie.ai/x".to_owned(), UrlRejection::Host))
        );
    }
}
