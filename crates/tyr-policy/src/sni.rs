//! TLS SNI patterns (`*` wildcard, `|` alternation) and DNS domain patterns.
