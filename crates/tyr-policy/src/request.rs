//! What is being decided: an action on a resource by a process.

use std::net::{IpAddr, SocketAddr};

use crate::model::Action;

/// The resource of a request, typed by action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A normalised absolute path (`file_read`, `file_write`, `exec`).
    Path(String),
    /// A destination address and port (`net_connect`); IPv4-mapped IPv6 is stored as IPv4.
    Addr { ip: IpAddr, port: u16 },
    /// A TLS ClientHello server name (`tls_connect`), lower-cased, without a trailing dot.
    Sni(String),
}

/// One request to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub action: Action,
    pub resource: Resource,
    /// Names the destination address was learned from in DNS answers (`net_connect`).
    pub domains: Vec<String>,
    /// Absolute path of the calling binary, when known.
    pub binary: Option<String>,
    /// The classified agent type of the calling process, when it is an agent.
    pub agent_type: Option<String>,
    /// Process context for Cedar conditions.
    pub context: Context,
}

/// Process context for Cedar conditions (`context.uid`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub uid: Option<u32>,
    pub pid: Option<u32>,
}

impl Request {
    /// A request for `action` on `resource`, parsed per action:
    /// - path actions: an absolute path, normalised lexically (`//` collapsed, `.` dropped,
    ///   `..` resolved but never above `/`, no trailing `/` except the root); NUL is refused;
    /// - `net_connect`: an IP address (`ip`, or `ip:port` / `[ip]:port`); IPv4-mapped IPv6
    ///   becomes IPv4; the port is 0 unless given (see [`Request::with_port`]);
    /// - `tls_connect`: a server name, lower-cased, trailing dot dropped.
    pub fn new(action: Action, resource: &str) -> Result<Request, String> {
        let resource = match action {
            Action::FileRead | Action::FileWrite | Action::Exec => {
                Resource::Path(normalize_path(resource)?)
            }
            Action::NetConnect => parse_addr(resource)?,
            Action::TlsConnect => {
                let name = resource.strip_suffix('.').unwrap_or(resource);
                if name.is_empty() || name.contains('\0') {
                    return Err(format!("`{resource}` is not a server name"));
                }
                Resource::Sni(name.to_ascii_lowercase())
            }
        };
        Ok(Request {
            action,
            resource,
            domains: Vec::new(),
            binary: None,
            agent_type: None,
            context: Context::default(),
        })
    }

    /// Sets the destination port (`net_connect` only; ignored otherwise).
    pub fn with_port(mut self, port: u16) -> Self {
        if let Resource::Addr { port: p, .. } = &mut self.resource {
            *p = port;
        }
        self
    }

    /// Sets the DNS names the destination address was learned from (lower-cased).
    pub fn with_domains<S: AsRef<str>>(mut self, domains: &[S]) -> Self {
        self.domains = domains
            .iter()
            .map(|d| d.as_ref().to_ascii_lowercase())
            .collect();
        self
    }

    /// Sets the absolute path of the calling binary.
    pub fn with_binary(mut self, binary: &str) -> Self {
        self.binary = Some(binary.to_string());
        self
    }

    /// Sets the classified agent type of the calling process.
    pub fn with_agent_type(mut self, agent_type: &str) -> Self {
        self.agent_type = Some(agent_type.to_string());
        self
    }

    /// Sets the process context seen by Cedar conditions.
    pub fn with_context(mut self, context: Context) -> Self {
        self.context = context;
        self
    }
}

/// Lexical normalisation of an absolute path (no symlink resolution).
fn normalize_path(path: &str) -> Result<String, String> {
    if path.contains('\0') {
        return Err("NUL byte in path".into());
    }
    if !path.starts_with('/') {
        return Err(format!("`{path}` is not an absolute path"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn parse_addr(s: &str) -> Result<Resource, String> {
    let (ip, port) = match s.parse::<IpAddr>() {
        Ok(ip) => (ip, 0),
        Err(_) => match s.parse::<SocketAddr>() {
            Ok(sa) => (sa.ip(), sa.port()),
            Err(_) => return Err(format!("`{s}` is not an IP address")),
        },
    };
    Ok(Resource::Addr {
        ip: ip.to_canonical(),
        port,
    })
}
