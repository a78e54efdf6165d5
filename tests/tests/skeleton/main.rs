//! Scenario tests of the walking skeleton (issue 3), driven by real MQTT clients and HTTP against
//! `tether run`'s services in-process on free ports — or, with `TETHER_TEST_MODE=cluster` (as
//! `make test` also runs them), against the cluster roles over real NATS and Redis.

mod api;
mod commands;
mod connect;
mod downlink;
mod gateway;
mod presence;
mod thing;
mod thing_api;
mod uplink;
