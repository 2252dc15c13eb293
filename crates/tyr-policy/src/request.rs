//! What is being decided: an action on a resource by a process.

use std::net::IpAddr;

use crate::model::Action;

/// The resource of a request, typed by action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A normalised absolute path (`file_read`, `file_write`, `exec`).
    Path(String),
    /// A destination address and port (`net_connect`); IPv4-mapped IPv6 is stored as IPv4.
    Addr { ip: IpAddr, port: u16 },
    /// A TLS ClientHello server name (`tls_connect`), lower-cased.
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
