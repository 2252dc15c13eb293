//! The Tyr host daemon `tyrd` as a library: configuration, events and the userspace event
//! pipeline. The binary (`main.rs`) wires them; the agent plane and the kernel side build on
//! them.

pub mod config;
pub mod event;
pub mod pipeline;
