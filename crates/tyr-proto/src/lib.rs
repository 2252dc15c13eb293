//! Generated gRPC types for the agent plane (filled by the agent-plane issue; `proto/` is the contract).
