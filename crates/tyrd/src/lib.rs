//! The Tyr host daemon `tyrd` as a library: configuration, events and the userspace event
//! pipeline. The binary (`main.rs`) wires them; the agent plane and the kernel side build on
//! them.

pub mod agent_plane;
pub mod config;
pub mod enforce;
pub mod enroll;
pub mod event;
pub mod kernel;
pub mod pipeline;
pub mod stream;
