//! Settings of the gateway's HTTP port, where MCP is served (`UMCP_HTTP__*`).

use serde::{Deserialize, Serialize};
use umcp_config::{check_http_url, check_range, check_socket_addr, env_name};

/// Default HTTP listen address (see DESIGN.md: gRPC on 50051, HTTP on 8080).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";

/// The gateway's HTTP port: MCP over Streamable HTTP at `/mcp` and its OAuth
/// protected-resource metadata at `/.well-known/oauth-protected-resource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address (`UMCP_HTTP__LISTEN`, default `127.0.0.1:8080`); empty turns the HTTP
    /// port off (the gRPC port is unaffected).
    pub listen: String,
    /// `Host` header values MCP requests may carry (`UMCP_HTTP__ALLOWED_HOSTS`, default
    /// `[localhost, 127.0.0.1, ::1]`): the DNS-rebinding guard. A name without a port
    /// matches any port; `host:port` matches only that port. Behind an ingress, list the
    /// public host name(s) the ingress forwards (`[mcp.example.com]`). An empty list turns
    /// the check off, which is only safe when something in front checks `Host`.
    pub allowed_hosts: Vec<String>,
    /// Browser `Origin` values allowed (`UMCP_HTTP__ALLOWED_ORIGINS`, default empty: no
    /// browser origin is accepted; requests without `Origin`, like every non-browser MCP
    /// client, pass). Entries carry a scheme: `https://app.example.com:443`,
    /// `http://localhost:*`.
    pub allowed_origins: Vec<String>,
    /// The public URL of the MCP endpoint (`UMCP_HTTP__RESOURCE_URL`, default empty: built
    /// from the request's `Host` as `http://<host>/mcp`). Behind an ingress that terminates
    /// TLS set it (`https://mcp.example.com/mcp`): it is the `resource` of the RFC 9728
    /// metadata and the base of the `resource_metadata` URL in the 401 challenge.
    pub resource_url: String,
    /// Authorization servers named in the RFC 9728 metadata (`UMCP_HTTP__AUTHORIZATION_SERVERS`,
    /// default empty: the auth service URL, `UMCP_AUTH__URL`).
    pub authorization_servers: Vec<String>,
    /// Largest MCP request body in bytes (`UMCP_HTTP__MAX_BODY_BYTES`, default 4 MiB, the
    /// gRPC message limit; 1 KiB..=16 MiB). Larger bodies get HTTP 413.
    pub max_body_bytes: usize,
    /// Deadline of one tool call's gRPC request in milliseconds (`UMCP_HTTP__TOOL_TIMEOUT_MS`,
    /// default 130000: above the longest sandbox run; 1000..=600000).
    pub tool_timeout_ms: u64,
    /// How long an API key's exchanged access token is reused, in seconds
    /// (`UMCP_HTTP__API_KEY_CACHE_SECS`, default 60; 0..=3600; never beyond the token's own
    /// expiry minus 10 s). 0 exchanges the key on every request.
    pub api_key_cache_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_HTTP_LISTEN.into(),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: Vec::new(),
            resource_url: String::new(),
            authorization_servers: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            tool_timeout_ms: 130_000,
            api_key_cache_secs: 60,
        }
    }
}

impl HttpConfig {
    /// Every problem of these settings, each naming its `UMCP_HTTP__…` variable.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.listen.is_empty() {
            problems.extend(check_socket_addr(
                "http.listen",
                &self.listen,
                "127.0.0.1:8080 (or empty to turn the HTTP port off)",
            ));
        }
        for host in &self.allowed_hosts {
            if host.is_empty() || host.contains(['/', ' ']) {
                problems.push(format!(
                    "http.allowed_hosts ({}) entry `{host}` must be a host name or host:port",
                    env_name("http.allowed_hosts")
                ));
            }
        }
        for origin in &self.allowed_origins {
            if origin != "null" && !origin.starts_with("http://") && !origin.starts_with("https://")
            {
                problems.push(format!(
                    "http.allowed_origins ({}) entry `{origin}` must start with http:// or https:// (or be `null`)",
                    env_name("http.allowed_origins")
                ));
            }
        }
        if !self.resource_url.is_empty() && !is_web_url(&self.resource_url) {
            problems.push(format!(
                "http.resource_url ({}) `{}` must be an http:// or https:// URL, or empty",
                env_name("http.resource_url"),
                self.resource_url
            ));
        }
        for server in &self.authorization_servers {
            if !is_web_url(server) {
                problems.extend(check_http_url("http.authorization_servers", server, None));
            }
        }
        problems.extend(check_range(
            "http.max_body_bytes",
            self.max_body_bytes,
            1024..=16 * 1024 * 1024,
        ));
        problems.extend(check_range(
            "http.tool_timeout_ms",
            self.tool_timeout_ms,
            1000..=600_000,
        ));
        problems.extend(check_range(
            "http.api_key_cache_secs",
            self.api_key_cache_secs,
            0..=3600,
        ));
        problems
    }
}

fn is_web_url(value: &str) -> bool {
    value
        .parse::<http::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(HttpConfig::default().problems().is_empty());
    }

    #[test]
    fn lists_come_from_the_environment_as_the_readme_shows() {
        use umcp_config::{Sources, load};
        let config: crate::GatewayConfig = load(&Sources::env([
            ("UMCP_HTTP__LISTEN", "0.0.0.0:8080"),
            (
                "UMCP_HTTP__ALLOWED_HOSTS",
                "[mcp.example.com, mcp.example.com:443]",
            ),
            (
                "UMCP_HTTP__ALLOWED_ORIGINS",
                "[https://app.example.com:443]",
            ),
            ("UMCP_HTTP__RESOURCE_URL", "https://mcp.example.com/mcp"),
        ]))
        .unwrap();
        assert_eq!(config.http.listen, "0.0.0.0:8080");
        assert_eq!(
            config.http.allowed_hosts,
            ["mcp.example.com", "mcp.example.com:443"]
        );
        assert_eq!(config.http.allowed_origins, ["https://app.example.com:443"]);
        assert_eq!(config.http.resource_url, "https://mcp.example.com/mcp");
        let off: crate::GatewayConfig = load(&Sources::env([("UMCP_HTTP__LISTEN", "")])).unwrap();
        assert!(off.http.listen.is_empty());
    }

    #[test]
    fn bad_values_name_their_variables() {
        let config = HttpConfig {
            listen: "8080".into(),
            allowed_hosts: vec!["http://x".into()],
            allowed_origins: vec!["example.com".into()],
            resource_url: "mcp.example.com".into(),
            max_body_bytes: 1,
            tool_timeout_ms: 0,
            ..HttpConfig::default()
        };
        let problems = config.problems().join("\n");
        for needle in [
            "UMCP_HTTP__LISTEN",
            "UMCP_HTTP__ALLOWED_HOSTS",
            "UMCP_HTTP__ALLOWED_ORIGINS",
            "UMCP_HTTP__RESOURCE_URL",
            "UMCP_HTTP__MAX_BODY_BYTES",
            "UMCP_HTTP__TOOL_TIMEOUT_MS",
        ] {
            assert!(problems.contains(needle), "{needle} missing in {problems}");
        }
        let off = HttpConfig {
            listen: String::new(),
            ..HttpConfig::default()
        };
        assert!(off.problems().is_empty());
    }
}
