//! The gRPC APIs between Tether's services: protobuf messages and tonic clients and servers,
//! generated from `proto/tether/v1/*.proto`.
//!
//! The generated code is checked in (`src/gen`); `cargo test -p tether-proto --test bootstrap`
//! regenerates it and fails on any difference. Nobody edits `src/gen` by hand. Proto types stop
//! at each service's adapter, where they are converted to domain types.

#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

pub mod tether {
    pub mod v1 {
        include!("gen/tether.v1.rs");
    }
}

pub use tether::v1;
