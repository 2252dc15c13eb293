//! The agent-plane wire contract (SPEC §5, §9): types generated from `proto/` and their
//! conversions to the tyr-policy model.

pub mod convert;

/// The generated code refers across packages by their proto path, so the modules mirror it.
mod tyr {
    pub mod events {
        // `Record` is a oneof of `Event` (large) and `Gap` (small); records live in a `Vec`
        // anyway, and boxing would cost an allocation per event.
        #[allow(clippy::large_enum_variant)]
        pub mod v1 {
            tonic::include_proto!("tyr.events.v1");
        }
    }
    pub mod agent {
        pub mod v1 {
            tonic::include_proto!("tyr.agent.v1");
        }
    }
}

/// `tyr.agent.v1`: the `AgentPlane` service (client and server stubs) and its messages.
pub use tyr::agent::v1 as agent;
/// `tyr.events.v1`: events, gaps and batches.
pub use tyr::events::v1 as events;
