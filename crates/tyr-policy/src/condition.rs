//! Cedar `condition`s: syntax check and evaluation against a request's context.
